// "At a glance": one small chart per worklist, every figure a `_summary=count` search with the
// user's token (no private API: the access decision counts what the user may see, no more).
// - the Task worklists: per 3-day bucket of the last 30 days (by `authored-on`), how many of
//   the Tasks that arrived then are still open, and how many of those are overdue (the `due`
//   SearchParameter: Task.restriction.period.end, before now);
// - the referral funnel: referrals (Task code fulfill) sent and received, per BSeR businessStatus.
import { type Client, count, element } from "../../shared/smart.js";
import type { View } from "../view.js";

export const OPEN = "requested,received,accepted,ready,in-progress,on-hold";
const FULFILL = "http://hl7.org/fhir/CodeSystem/task-code|fulfill";
const CAREGAP = "http://terminology.hl7.org/CodeSystem/v3-ActCode|CAREGAP";
const BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS";
// The funnel's steps, in the order a referral goes through them (BSeR TaskBusinessStatusCS).
export const FUNNEL: [string, string][] = [
  ["2.0", "Created"], ["3.0", "Accepted"], ["4.0", "Declined"], ["5.1.1", "Scheduled"],
  ["5.1.2", "Unattended"], ["5.1.3", "Event cancelled"], ["5.1.4", "Event completed"],
  ["6.0", "Cancelled"], ["7.0", "Completed"],
];
export const DAYS = 30;
export const BUCKET_DAYS = 3;
const DAY = 86_400_000;
const PARALLEL = 6; // count searches in flight at once: the charts must not crowd out the worklists

interface Series { name: string; queries: string[] }
interface Chart { id: string; title: string; labels: string[]; series: Series[]; horizontal?: boolean }

function day(d: Date): string { return d.toISOString().slice(0, 10); }

/** The buckets of the last DAYS days, oldest first: [start, end) as dates. */
export function buckets(now: Date): [Date, Date][] {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) + DAY;
  const out: [Date, Date][] = [];
  for (let end = today; out.length < DAYS / BUCKET_DAYS; end -= BUCKET_DAYS * DAY) {
    out.unshift([new Date(end - BUCKET_DAYS * DAY), new Date(end)]);
  }
  return out;
}

function openVsOverdue(id: string, title: string, base: string, now: Date): Chart {
  const spans = buckets(now);
  const window = (s: [Date, Date]): string => `&authored-on=ge${day(s[0])}&authored-on=lt${day(s[1])}`;
  return {
    id, title, labels: spans.map((s) => day(s[0]).slice(5)),
    series: [
      { name: "open", queries: spans.map((s) => `${base}&status=${OPEN}${window(s)}`) },
      { name: "overdue", queries: spans.map((s) => `${base}&status=${OPEN}${window(s)}&due=lt${now.toISOString()}`) },
    ],
  };
}

export function charts(owners: string[], now: Date): Chart[] {
  const mine = owners.map(encodeURIComponent).join(",");
  return [
    openVsOverdue("mine", "My tasks", `Task?owner=${mine}`, now),
    openVsOverdue("pool", "Team pool", "Task?owner:missing=true", now),
    openVsOverdue("gaps", "Care gaps", `Task?code=${encodeURIComponent(CAREGAP)}`, now),
    {
      id: "funnel", title: "Referral funnel", labels: FUNNEL.map(([, name]) => name), horizontal: true,
      series: [
        { name: "sent", queries: FUNNEL.map(([code]) => `Task?code=${encodeURIComponent(FULFILL)}&requester=${mine}&business-status=${encodeURIComponent(`${BSER}|${code}`)}`) },
        { name: "received", queries: FUNNEL.map(([code]) => `Task?code=${encodeURIComponent(FULFILL)}&owner=${mine}&business-status=${encodeURIComponent(`${BSER}|${code}`)}`) },
      ],
    },
  ];
}

/** Runs `work` over `items`, at most `limit` at once, keeping the order. */
async function pooled<T, U>(items: T[], limit: number, work: (t: T) => Promise<U>): Promise<U[]> {
  const out: U[] = new Array(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await work(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag: string, attributes: Record<string, string | number>, label?: string): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (label !== undefined) node.textContent = label;
  return node;
}

/** Grouped bars, one group per label, with the numbers also in a table (screen readers). */
function drawChart(chart: Chart, values: number[][]): HTMLElement {
  const top = Math.max(1, ...values.flat());
  const total = (k: number): number => values[k].reduce((a, b) => a + b, 0);
  const bar = (k: number, i: number, at: Record<string, number>): SVGElement => {
    const s = chart.series[k], label = chart.labels[i], n = values[k][i];
    const rect = svg("rect", { ...at, class: `bar ${s.name}`, "data-series": s.name, "data-label": label, "data-count": n });
    rect.append(svg("title", {}, `${label} · ${s.name}: ${n}`));
    return rect;
  };
  const ariaLabel = `${chart.title}: ${chart.series.map((s, k) => `${s.name} ${total(k)}`).join(", ")}`;
  let figure: SVGElement;
  if (chart.horizontal) {
    // One row per step, its name at the left: long names stay readable.
    const width = 320, row = 16, left = 96, height = chart.labels.length * row + 4;
    const bh = (row - 4) / chart.series.length;
    figure = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": ariaLabel });
    chart.labels.forEach((label, i) => {
      figure.append(svg("text", { x: left - 4, y: i * row + row / 2 + 4, "text-anchor": "end", class: "bar-label" }, label));
      chart.series.forEach((_, k) => {
        figure.append(bar(k, i, { x: left, y: i * row + 2 + k * bh, height: bh - 0.5,
          width: ((width - left - 4) * values[k][i]) / top }));
      });
    });
  } else {
    const width = 320, height = 140, bottom = 28, left = 6;
    const group = (width - left) / chart.labels.length;
    const bw = (group - 4) / chart.series.length;
    figure = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": ariaLabel });
    chart.labels.forEach((label, i) => {
      chart.series.forEach((_, k) => {
        const h = ((height - bottom - 14) * values[k][i]) / top;
        figure.append(bar(k, i, { x: left + i * group + k * bw, y: height - bottom - h, width: bw - 1, height: h }));
      });
      figure.append(svg("text", { x: left + i * group + group / 2, y: height - bottom + 12, "text-anchor": "middle",
        class: "bar-label" }, label));
    });
  }
  const legend = element("p", { class: "legend" }, ...chart.series.map((s) =>
    element("span", { class: `key ${s.name}` }, s.name)));
  const table = element("table", { class: "chart-data" },
    element("caption", {}, `${chart.title} (numbers)`),
    element("thead", {}, element("tr", {}, element("th", { scope: "col" }, ""),
      ...chart.series.map((s) => element("th", { scope: "col" }, s.name)))),
    element("tbody", {}, ...chart.labels.map((label, i) => element("tr", {},
      element("th", { scope: "row" }, label), ...chart.series.map((_, k) => element("td", {}, String(values[k][i])))))));
  const details = element("details", {}, element("summary", {}, "Numbers"), table);
  return element("figure", { class: "chart", id: `chart-${chart.id}` },
    element("figcaption", {}, chart.title), figure, legend, details);
}

async function render(client: Client, host: HTMLElement, owners: string[]): Promise<void> {
  const list = charts(owners, new Date());
  const queries = list.flatMap((c) => c.series.flatMap((s) => s.queries));
  const counts = await pooled(queries, PARALLEL, (q) => count(client, q));
  let at = 0;
  const figures = list.map((chart) => drawChart(chart, chart.series.map((s) => s.queries.map(() => counts[at++]))));
  host.replaceChildren(element("h2", { id: "view-title" }, "At a glance"),
    element("p", {}, `Open and overdue Tasks by the day they arrived (last ${DAYS} days, ${BUCKET_DAYS}-day bars); referrals by BSeR status.`),
    element("div", { class: "charts" }, ...figures));
}

/** The charts. Live: Tasks of the user and their roles change (the topic `task-status`); every
 * paint counts again. */
export const glance: View = {
  id: "glance",
  title: "At a glance",
  live: (me) => ({ topic: "task-status", filters: [`Task?owner=${me.refs.join(",")}`] }),
  render: (ctx) => render(ctx.client, ctx.root, ctx.me.refs),
};

// The patient's care drawn along time: one lane per kind of item (Tasks, Appointments, ...),
// each item a link to its resource. Pure drawing (no FHIR requests): the patient view gives
// the items and the range shown, and draws again when the range changes (zoom, pan).

export interface TimelineItem {
  lane: string; // one of LANES
  reference: string; // Type/id: where the item links to
  label: string;
  start: Date;
  end?: Date; // an interval (a visit, an encounter); a point when absent
}

export interface Range { start: Date; end: Date }

export const LANES = ["Tasks", "Appointments", "Encounters", "Communications", "Documents",
  "CarePlan activities", "Care gaps"] as const;

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000; // viewBox units; the figure scales to its container
const GUTTER = 150; // the lane names
const LANE_HEIGHT = 34;
const AXIS = 26;
const DAY = 86_400_000;

function svg(tag: string, attributes: Record<string, string | number> = {}): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/** The smallest range holding every item, with a margin (a week when there is one item or none). */
export function fit(items: TimelineItem[], now: Date = new Date()): Range {
  const times = items.flatMap((i) => [i.start.getTime(), (i.end ?? i.start).getTime()]);
  const lo = times.length ? Math.min(...times) : now.getTime() - 7 * DAY;
  const hi = times.length ? Math.max(...times) : now.getTime() + 7 * DAY;
  const margin = Math.max((hi - lo) * 0.05, DAY);
  return { start: new Date(lo - margin), end: new Date(hi + margin) };
}

/** `range` zoomed by `factor` (< 1 in, > 1 out) around its middle; never narrower than an hour. */
export function zoom(range: Range, factor: number): Range {
  const mid = (range.start.getTime() + range.end.getTime()) / 2;
  const half = Math.max(((range.end.getTime() - range.start.getTime()) * factor) / 2, 1_800_000);
  return { start: new Date(mid - half), end: new Date(mid + half) };
}

/** `range` moved by `fraction` of its span (negative: earlier). */
export function pan(range: Range, fraction: number): Range {
  const shift = (range.end.getTime() - range.start.getTime()) * fraction;
  return { start: new Date(range.start.getTime() + shift), end: new Date(range.end.getTime() + shift) };
}

export function visible(item: TimelineItem, range: Range): boolean {
  return (item.end ?? item.start) >= range.start && item.start <= range.end;
}

// Tick spacing: the first step that gives at most ~8 ticks over the range.
const STEPS = [3_600_000, 6 * 3_600_000, DAY, 7 * DAY, 30 * DAY, 91 * DAY, 365 * DAY];

function ticks(range: Range): Date[] {
  const span = range.end.getTime() - range.start.getTime();
  const step = STEPS.find((s) => span / s <= 8) ?? span / 8;
  const first = Math.ceil(range.start.getTime() / step) * step;
  const out: Date[] = [];
  for (let t = first; t <= range.end.getTime(); t += step) out.push(new Date(t));
  return out;
}

function tickLabel(date: Date, range: Range): string {
  const span = range.end.getTime() - range.start.getTime();
  const iso = date.toISOString();
  return span <= 2 * DAY ? iso.slice(11, 16) : span <= 400 * DAY ? iso.slice(5, 10) : iso.slice(0, 7);
}

/** The figure: lanes, a time axis, a "now" line, and each visible item as a link. */
export function draw(items: TimelineItem[], range: Range, href: (reference: string) => string,
  now: Date = new Date()): SVGElement {
  const height = AXIS + LANES.length * LANE_HEIGHT + 6;
  const figure = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`, width: "100%", role: "img", class: "timeline",
    "aria-label": `Care timeline from ${range.start.toISOString().slice(0, 10)} to ${range.end.toISOString().slice(0, 10)}`,
    "data-start": range.start.toISOString(), "data-end": range.end.toISOString(),
  });
  const span = range.end.getTime() - range.start.getTime();
  const x = (d: Date): number => GUTTER + ((d.getTime() - range.start.getTime()) / span) * (WIDTH - GUTTER - 10);
  for (const tick of ticks(range)) {
    figure.append(svg("line", { x1: x(tick), x2: x(tick), y1: AXIS - 6, y2: height, class: "tick" }));
    const text = svg("text", { x: x(tick), y: AXIS - 10, "text-anchor": "middle", class: "tick-label" });
    text.textContent = tickLabel(tick, range);
    figure.append(text);
  }
  LANES.forEach((lane, i) => {
    const y = AXIS + i * LANE_HEIGHT;
    figure.append(svg("rect", { x: 0, y, width: WIDTH, height: LANE_HEIGHT, class: i % 2 ? "lane odd" : "lane" }));
    const name = svg("text", { x: 6, y: y + LANE_HEIGHT / 2 + 4, class: "lane-label" });
    name.textContent = lane;
    figure.append(name);
  });
  if (now >= range.start && now <= range.end) {
    figure.append(svg("line", { x1: x(now), x2: x(now), y1: AXIS - 6, y2: height, class: "now" }));
  }
  for (const item of items.filter((i) => visible(i, range))) {
    const lane = LANES.indexOf(item.lane as (typeof LANES)[number]);
    const y = AXIS + lane * LANE_HEIGHT + LANE_HEIGHT / 2;
    const when = item.start.toISOString().slice(0, 16).replace("T", " ");
    const link = svg("a", { href: href(item.reference), "data-ref": item.reference,
      "data-lane": item.lane, "aria-label": `${item.lane}: ${item.label}, ${when}` });
    const title = svg("title");
    title.textContent = `${item.label} (${when})`;
    link.append(title);
    const from = Math.max(x(item.start), GUTTER);
    const to = item.end ? Math.min(x(item.end), WIDTH - 10) : from;
    if (to - from > 8) {
      link.append(svg("rect", { x: from, y: y - 7, width: to - from, height: 14, rx: 4, class: "item" }));
    } else {
      link.append(svg("circle", { cx: from, cy: y, r: 7, class: "item" }));
    }
    figure.append(link);
  }
  return figure;
}

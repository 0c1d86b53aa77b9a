// Today's visits: my booked Appointments of the day with their preparation status (the
// `visit-preparation` Task the telehealth workflow writes per booking, docs/telemedicine.md)
// and a join button (`$join`); book a visit from free Slots (`$find` → `$book`), move one
// (`$find` → `$reschedule`) or cancel one (`$cancel`).
import { ask } from "../../shared/dialog.js";
import { operation } from "../../shared/fhir.js";
import { element, resources } from "../../shared/smart.js";
import type { View, ViewContext } from "../view.js";
import { actionButton, type Bundle, type Reference, refText } from "../worklist.js";
import type { Task } from "./tasks.js";

interface Appointment {
  resourceType: "Appointment";
  id: string;
  status: string;
  description?: string;
  start?: string;
  end?: string;
  serviceType?: { text?: string }[];
  participant?: { actor?: Reference; status?: string }[];
}

const PREPARATION = "http://fhir.care-coord.example/CodeSystem/visit-task|visit-preparation";
const SHOWN = "booked,arrived,checked-in";

function day(offset: number): string {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  d.setDate(d.getDate() + offset);
  return d.toISOString();
}

function query(ctx: ViewContext, offset: number): string {
  const actors = ctx.me.refs.map(encodeURIComponent).join(",");
  return `Appointment?actor=${actors}&status=${SHOWN}&date=ge${encodeURIComponent(day(offset))}`
    + `&date=lt${encodeURIComponent(day(offset + 1))}`;
}

function time(instant: string | undefined): string {
  return instant ? new Date(instant).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "—";
}

function patientOf(a: Appointment): Reference | undefined {
  return a.participant?.find((p) => p.actor?.reference?.startsWith("Patient/"))?.actor;
}

let offset = 0; // the day shown: 0 today, 1 tomorrow...

/** Free Slots offered by `$find` (proposals), to choose one for a booking or a move. */
async function choose(ctx: ViewContext, title: string, patient: string | undefined): Promise<unknown | null> {
  const when = await ask(title, [
    { name: "date", label: "Day", kind: "date", required: true, value: day(offset).slice(0, 10) },
    ...(patient === undefined ? [{ name: "patient", label: "Patient (e.g. Patient/123)", required: true }] : []),
  ], "Find free slots");
  if (!when) return null;
  const start = new Date(`${when.date}T00:00:00`);
  const end = new Date(start.getTime() + 86_400_000);
  const who = patient ?? when.patient;
  const practitioner = ctx.me.refs.find((r) => r.startsWith("Practitioner/")) ?? ctx.me.refs[0];
  const params = new URLSearchParams({ start: start.toISOString(), end: end.toISOString(), _count: "50" });
  if (practitioner?.startsWith("Practitioner/")) params.set("practitioner", practitioner);
  params.set("patient", who.replace(/^Patient\//, ""));
  const found = (await ctx.client.request(`Appointment/$find?${params}`)) as Bundle<Appointment>;
  const proposals = resources<Appointment>(found);
  if (!proposals.length) throw new Error(`no free slot on ${when.date}`);
  const pick = await ask("Choose a time", [{ name: "slot", label: "Free slots", kind: "select",
    options: proposals.map((p, i) => ({ value: String(i), label: `${time(p.start)}–${time(p.end)}` })) }], "Choose");
  return pick ? proposals[Number(pick.slot)] : null;
}

async function book(ctx: ViewContext): Promise<void> {
  const proposal = await choose(ctx, "Book a visit", undefined);
  if (proposal) await operation(ctx.client, "Appointment/$book", [{ name: "appointment-resource", resource: proposal }]);
}

async function move(ctx: ViewContext, a: Appointment): Promise<void> {
  const proposal = await choose(ctx, "Move the visit", patientOf(a)?.reference ?? "");
  if (proposal) {
    await operation(ctx.client, `Appointment/${a.id}/$reschedule`, [{ name: "appointment-resource", resource: proposal }]);
  }
}

async function cancel(ctx: ViewContext, a: Appointment): Promise<void> {
  const answer = await ask("Cancel the visit", [{ name: "reason", label: "Reason (the participants are told)", kind: "textarea" }],
    "Cancel the visit");
  if (answer) {
    await operation(ctx.client, `Appointment/${a.id}/$cancel`,
      answer.reason ? [{ name: "reason", valueString: answer.reason }] : []);
  }
}

async function join(ctx: ViewContext, a: Appointment): Promise<void> {
  const answer = (await operation(ctx.client, `Appointment/${a.id}/$join`)) as { parameter?: { name: string; valueUrl?: string; valueString?: string }[] };
  const url = answer.parameter?.find((p) => p.name === "url");
  const href = url?.valueUrl ?? url?.valueString;
  if (!href) throw new Error("$join answered no url");
  window.open(href, "_blank", "noopener");
}

async function render(ctx: ViewContext): Promise<void> {
  const bundle = (await ctx.client.request(`${query(ctx, offset)}&_sort=date&_count=100`)) as Bundle<Appointment>;
  const visits = resources<Appointment>(bundle);
  // One search for every visit's preparation Task.
  const prep = new Map<string, string>();
  if (visits.length) {
    const focus = visits.map((v) => `Appointment/${v.id}`).join(",");
    const tasks = resources<Task>((await ctx.client.request(
      `Task?code=${encodeURIComponent(PREPARATION)}&focus=${focus}&_count=100`)) as Bundle<Task>);
    for (const t of tasks) if (t.focus?.reference) prep.set(t.focus.reference.replace(/^.*\/(Appointment\/)/, "$1"), t.status);
  }
  const title = element("h2", { id: "visits-title" }, offset === 0 ? "Today's visits" : `Visits on ${day(offset).slice(0, 10)}`);
  const daySelect = element("select", { id: "visits-day" }) as HTMLSelectElement;
  for (const [value, label] of [["0", "Today"], ["1", "Tomorrow"], ["2", "In two days"]]) {
    const o = element("option", { value }, label) as HTMLOptionElement;
    o.selected = Number(value) === offset;
    daySelect.append(o);
  }
  daySelect.addEventListener("change", () => {
    offset = Number(daySelect.value);
    render(ctx).then(() => document.getElementById("visits-day")?.focus()).catch(ctx.fail);
  });
  const toolbar = element("div", { class: "toolbar" }, element("label", { for: "visits-day" }, "Day ", daySelect),
    actionButton(ctx, "Book a visit", "book", () => book(ctx)));
  const rows = visits.map((a) => {
    const state = prep.get(`Appointment/${a.id}`);
    const prepared = state === "completed" ? "prepared" : state ? `preparation ${state}` : "no preparation";
    return element("tr", { "data-id": a.id },
      element("td", { "data-label": "Time" }, `${time(a.start)}–${time(a.end)}`),
      element("td", { "data-label": "Visit" }, a.description ?? a.serviceType?.[0]?.text ?? "Visit"),
      element("td", { "data-label": "Patient" }, refText(patientOf(a))),
      element("td", { "data-label": "Preparation", class: `prep-${state ?? "none"}` }, prepared),
      element("td", { "data-label": "Actions", class: "actions" },
        actionButton(ctx, "Join", "join", () => join(ctx, a), `${a.description ?? "visit"} at ${time(a.start)}`),
        actionButton(ctx, "Move", "move", () => move(ctx, a), `${a.description ?? "visit"} at ${time(a.start)}`),
        actionButton(ctx, "Cancel", "cancel", () => cancel(ctx, a), `${a.description ?? "visit"} at ${time(a.start)}`)));
  });
  const body = rows.length
    ? element("table", { "aria-labelledby": "visits-title" },
      element("thead", {}, element("tr", {}, ...["Time", "Visit", "Patient", "Preparation", "Actions"]
        .map((h) => element("th", { scope: "col" }, h)))),
      element("tbody", {}, ...rows))
    : element("p", { class: "empty" }, "No visits on this day.");
  ctx.root.replaceChildren(title, toolbar, body);
}

export const visits: View = {
  id: "visits",
  title: "Today's visits",
  count: (ctx) => ctx.count(query(ctx, 0)),
  live: (me) => ({ topic: "appointment-status", filters: [`Appointment?actor=${me.refs.map(encodeURIComponent).join(",")}`] }),
  render,
};

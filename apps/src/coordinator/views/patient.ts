// The patient view: the patient's care across types as a timeline (zoomable; each item links
// to its resource), the CarePlans with their activities and goals, the CareTeams with roles.
// Every item comes from a FHIR search with the user's token; what the access decision (scopes,
// Consent) withholds is simply not there.
import { type Client, element, resources } from "../../shared/smart.js";
import type { View } from "../view.js";
import { type Range, type TimelineItem, draw, fit, pan, visible, zoom } from "./timeline.js";

// FHIR JSON as it comes: read defensively, field by field.
type R = Record<string, any>;

const PAGES = 5; // pages followed per search (100 each): a patient's care of several years
const CARE_GAP = "CAREGAP";

function text(concept: R | undefined): string | undefined {
  return concept?.text ?? concept?.coding?.[0]?.display ?? concept?.coding?.[0]?.code;
}

function date(...values: (string | undefined)[]): Date | undefined {
  const value = values.find((v) => typeof v === "string" && v.length >= 4);
  const parsed = value ? new Date(value) : undefined;
  return parsed && !Number.isNaN(parsed.getTime()) ? parsed : undefined;
}

function personName(patient: R): string {
  const name = patient.name?.[0];
  return name?.text ?? ([...(name?.given ?? []), name?.family].filter(Boolean).join(" ") || `Patient/${patient.id}`);
}

/** One item per resource (per activity for a CarePlan), placed at the time that matters for it. */
export function itemsOf(found: R[]): TimelineItem[] {
  const items: TimelineItem[] = [];
  const add = (lane: string, ref: string, label: string, start?: Date, end?: Date): void => {
    if (start) items.push({ lane, reference: ref, label, start, end });
  };
  for (const r of found) {
    const ref = `${r.resourceType}/${r.id}`;
    const updated = r.meta?.lastUpdated as string | undefined;
    switch (r.resourceType) {
      case "Task":
        add("Tasks", ref, `${r.description ?? text(r.code) ?? "Task"} (${r.status})`,
          date(r.restriction?.period?.end, r.executionPeriod?.start, r.authoredOn, updated));
        break;
      case "Appointment":
        add("Appointments", ref, `${r.description ?? text(r.serviceType?.[0]) ?? "Visit"} (${r.status})`,
          date(r.start, r.requestedPeriod?.[0]?.start, updated), date(r.end));
        break;
      case "Encounter":
        add("Encounters", ref, `${text(r.type?.[0]) ?? text(r.serviceType) ?? r.class?.display ?? "Encounter"} (${r.status})`,
          date(r.period?.start, updated), date(r.period?.end));
        break;
      case "Communication":
        add("Communications", ref, text(r.topic) ?? r.payload?.[0]?.contentString ?? "Message",
          date(r.sent, r.received, updated));
        break;
      case "DocumentReference":
        add("Documents", ref, r.description ?? text(r.type) ?? r.content?.[0]?.attachment?.title ?? "Document",
          date(r.date, r.context?.period?.start, updated));
        break;
      case "DetectedIssue":
        if ((r.code?.coding ?? []).some((c: R) => c.code === CARE_GAP)) {
          add("Care gaps", ref, `${r.detail ?? text(r.code) ?? "Care gap"} (${r.status})`,
            date(r.identifiedDateTime, r.identifiedPeriod?.start, updated));
        }
        break;
      case "CarePlan":
        for (const activity of r.activity ?? []) {
          const d = activity.detail ?? {};
          add("CarePlan activities", ref,
            `${d.description ?? text(d.code) ?? "Activity"} (${d.status ?? "?"})`,
            date(d.scheduledPeriod?.start, d.scheduledTiming?.event?.[0],
              d.scheduledTiming?.repeat?.boundsPeriod?.start, d.scheduledString, r.period?.start, updated),
            date(d.scheduledPeriod?.end));
        }
        break;
      default:
    }
  }
  return items.sort((a, b) => a.start.getTime() - b.start.getTime());
}

async function search(client: Client, query: string): Promise<R[]> {
  return (await client.request(query, { pageLimit: PAGES, flat: true })) as R[];
}

/** Everything the view shows of one patient (one search per type, in parallel). */
export async function load(client: Client, patientId: string): Promise<{ patient: R; found: R[] }> {
  const p = `patient=Patient/${encodeURIComponent(patientId)}&_count=100`;
  const [patient, ...lists] = await Promise.all([
    client.request(`Patient/${encodeURIComponent(patientId)}`) as Promise<R>,
    search(client, `Task?${p}`), search(client, `Appointment?${p}`), search(client, `Encounter?${p}`),
    search(client, `Communication?${p}`), search(client, `DocumentReference?${p}`),
    search(client, `CarePlan?${p}&_include=CarePlan:goal`), search(client, `DetectedIssue?${p}`),
    search(client, `CareTeam?${p}`),
  ]);
  return { patient, found: lists.flat() };
}

function carePlans(found: R[]): HTMLElement {
  const goals = new Map(found.filter((r) => r.resourceType === "Goal").map((g) => [`Goal/${g.id}`, g]));
  const plans = found.filter((r) => r.resourceType === "CarePlan");
  const section = element("section", { id: "careplans", "aria-labelledby": "careplans-title" },
    element("h3", { id: "careplans-title" }, "Care plans"));
  if (!plans.length) section.append(element("p", { class: "empty" }, "No care plan."));
  for (const plan of plans) {
    const activities = element("ul", { class: "activities" }, ...(plan.activity ?? []).map((a: R) => {
      const d = a.detail ?? {};
      const when = d.scheduledPeriod?.start ?? d.scheduledTiming?.event?.[0] ?? d.scheduledString;
      return element("li", {}, `${d.description ?? text(d.code) ?? "Activity"} — ${d.status ?? "?"}`,
        when ? ` · ${String(when).slice(0, 10)}` : "");
    }));
    const planGoals = element("ul", { class: "goals" }, ...(plan.goal ?? []).map((ref: R) => {
      const goal = goals.get(ref.reference);
      return element("li", {}, goal ? `${text(goal.description) ?? "Goal"} — ${goal.lifecycleStatus}` : (ref.display ?? ref.reference));
    }));
    section.append(element("article", { class: "careplan", "data-id": plan.id },
      element("h4", {}, element("a", { href: `#resource/CarePlan/${plan.id}` }, plan.title ?? text(plan.category?.[0]) ?? "Care plan"),
        ` (${plan.status})`),
      element("h5", {}, "Activities"), activities,
      element("h5", {}, "Goals"), plan.goal?.length ? planGoals : element("p", { class: "empty" }, "No goal.")));
  }
  return section;
}

function careTeams(found: R[]): HTMLElement {
  const teams = found.filter((r) => r.resourceType === "CareTeam");
  const section = element("section", { id: "careteams", "aria-labelledby": "careteams-title" },
    element("h3", { id: "careteams-title" }, "Care team"));
  if (!teams.length) section.append(element("p", { class: "empty" }, "No care team."));
  for (const team of teams) {
    section.append(element("article", { class: "careteam", "data-id": team.id },
      element("h4", {}, element("a", { href: `#resource/CareTeam/${team.id}` }, team.name ?? "Care team"), ` (${team.status ?? "?"})`),
      element("ul", {}, ...(team.participant ?? []).map((p: R) => element("li", {},
        `${p.member?.display ?? p.member?.reference ?? "?"} — ${(p.role ?? []).map(text).filter(Boolean).join(", ") || "no role"}`)))));
  }
  return section;
}

function itemTable(items: TimelineItem[], range: Range, href: (ref: string) => string): HTMLElement {
  // The same items as a list: for screen readers, and readable on a phone.
  const shown = items.filter((i) => visible(i, range));
  return element("table", { class: "timeline-items", "aria-label": "Timeline items shown" },
    element("thead", {}, element("tr", {}, ...["When", "Kind", "What"].map((h) => element("th", { scope: "col" }, h)))),
    element("tbody", {}, ...shown.map((i) => element("tr", { "data-ref": i.reference },
      element("td", { "data-label": "When" }, i.start.toISOString().slice(0, 16).replace("T", " ")),
      element("td", { "data-label": "Kind" }, i.lane),
      element("td", { "data-label": "What" }, element("a", { href: href(i.reference) }, i.label))))));
}

const TYPE_ID = /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/;

/** The item a timeline link opened: the resource as the FHIR API answers it to the user. */
async function selected(client: Client, reference: string, close: string): Promise<HTMLElement> {
  if (!TYPE_ID.test(reference)) throw new Error(`not a resource reference: ${reference.slice(0, 80)}`);
  const resource = await client.request(reference);
  return element("section", { id: "selected", "data-ref": reference, "aria-labelledby": "selected-title" },
    element("h3", { id: "selected-title" }, reference, " ", element("a", { href: close }, "(close)")),
    element("pre", { class: "resource-json", tabindex: "0", "aria-label": `${reference} as JSON` },
      JSON.stringify(resource, null, 2)));
}

/** `#patient/<id>[/<Type>/<id>]`: the patient, and the item opened from the timeline. */
export function parseHash(hash: string): { patientId: string; reference: string } {
  const [, patientId = "", ...rest] = decodeURIComponent(hash.replace(/^#/, "")).split("/");
  return { patientId, reference: rest.join("/") };
}

// Kept across paints of the same patient (a live change must not undo the user's zoom).
let shownRange: { patientId: string; range: Range } | null = null;

/** Paints the patient view into `host`; resolves once painted. No patient: a patient search. */
async function render(client: Client, host: HTMLElement, hash: string): Promise<void> {
  const { patientId, reference } = parseHash(hash);
  if (!patientId) return pick(client, host);
  const [{ patient, found }, detail] = await Promise.all([load(client, patientId),
    reference ? selected(client, reference, `#patient/${patientId}`) : Promise.resolve(null)]);
  const items = itemsOf(found);
  const href = (ref: string): string => `#patient/${patientId}/${ref}`;
  let range = shownRange?.patientId === patientId ? shownRange.range : fit(items);
  const figure = element("div", { class: "timeline-figure", tabindex: "0",
    "aria-label": "Timeline: + and - zoom, arrow keys move" });
  const list = element("div", { class: "timeline-list" });
  const paint = (): void => {
    shownRange = { patientId, range };
    figure.replaceChildren(draw(items, range, href));
    list.replaceChildren(itemTable(items, range, href));
  };
  const button = (label: string, id: string, change: () => Range): HTMLElement => {
    const b = element("button", { type: "button", id }, label);
    b.addEventListener("click", () => { range = change(); paint(); });
    return b;
  };
  figure.addEventListener("keydown", (event) => {
    const change: Record<string, () => Range> = {
      "+": () => zoom(range, 0.5), "=": () => zoom(range, 0.5), "-": () => zoom(range, 2),
      ArrowLeft: () => pan(range, -0.25), ArrowRight: () => pan(range, 0.25),
    };
    const f = change[event.key];
    if (f) { event.preventDefault(); range = f(); paint(); }
  });
  figure.addEventListener("wheel", (event) => {
    if (!event.ctrlKey) return; // plain scrolling scrolls the page
    event.preventDefault();
    range = zoom(range, event.deltaY < 0 ? 0.8 : 1.25);
    paint();
  }, { passive: false });
  const controls = element("div", { class: "timeline-controls", role: "group", "aria-label": "Timeline zoom" },
    button("Zoom in", "zoom-in", () => zoom(range, 0.5)), button("Zoom out", "zoom-out", () => zoom(range, 2)),
    button("Earlier", "pan-earlier", () => pan(range, -0.5)), button("Later", "pan-later", () => pan(range, 0.5)),
    button("Fit all", "zoom-fit", () => fit(items)));
  paint();
  host.replaceChildren(
    element("h2", { id: "view-title", "data-patient": patient.id }, personName(patient)),
    ...(detail ? [detail] : []),
    element("section", { id: "timeline", "aria-labelledby": "timeline-title" },
      element("h3", { id: "timeline-title" }, "Timeline"), controls, figure, list),
    carePlans(found), careTeams(found));
}

/** No patient chosen: a name search, each result a link to its patient view. */
async function pick(client: Client, host: HTMLElement): Promise<void> {
  const input = element("input", { type: "search", id: "patient-search", name: "name", "aria-label": "Patient name" });
  const results = element("ul", { id: "patient-results" });
  const form = element("form", { role: "search" }, input, element("button", { type: "submit" }, "Find"));
  const find = async (): Promise<void> => {
    const name = (input as HTMLInputElement).value.trim();
    const bundle = (await client.request(`Patient?_count=20${name ? `&name=${encodeURIComponent(name)}` : ""}`)) as R;
    const patients = resources<R>(bundle);
    results.replaceChildren(...patients.map((p) => element("li", { "data-id": p.id },
      element("a", { href: `#patient/${p.id}` }, personName(p)))));
    if (!patients.length) results.replaceChildren(element("li", { class: "empty" }, "No patient found."));
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); find().catch(console.error); });
  host.replaceChildren(element("h2", { id: "view-title" }, "Patients"), form, results);
  await find();
}

/** The patient view. Live: the patient's Tasks (the topic `task-status`, filtered by patient),
 * the part of a patient's care that changes most; its other items are read again on each paint. */
export const patientView: View = {
  id: "patient",
  title: "Patient",
  live: () => {
    const { patientId } = parseHash(location.hash);
    return { topic: "task-status", filters: patientId ? [`Task?patient=Patient/${patientId}`] : ["Task?patient=Patient/none"] };
  },
  render: (ctx) => render(ctx.client, ctx.root, location.hash),
};

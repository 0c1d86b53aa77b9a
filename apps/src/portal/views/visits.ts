// My upcoming visits: joining a video visit inside its window (`$join`), and the pre-visit
// questionnaire the engine asked for (a Task `pre-visit-questionnaire` whose `focus` is the
// visit and whose input names the Questionnaire), answered as a QuestionnaireResponse that
// becomes the Task's output.
import { copy, create, operation, update } from "../../shared/fhir.js";
import { element, resources } from "../../shared/smart.js";
import { form, type Questionnaire, response } from "../questionnaire.js";
import type { View, ViewContext } from "../view.js";

const VISIT_TASKS = "http://fhir.care-coord.example/CodeSystem/visit-task";
const VIRTUAL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService";
// The server's default join window (FHIR_VISIT_JOIN_BEFORE / _AFTER); the server decides, and
// its 409 says the real window should a deployment have moved it.
const JOIN_BEFORE_MS = 3600_000;
const JOIN_AFTER_MS = 2 * 3600_000;

interface Appointment {
  resourceType: "Appointment"; id: string; status: string; start?: string; description?: string;
  serviceType?: { text?: string }[]; extension?: { url: string }[];
}
interface Task {
  resourceType: "Task"; id: string; status: string; focus?: { reference?: string };
  input?: { valueCanonical?: string }[]; output?: unknown[]; meta?: { versionId?: string };
}

function when(instant: string | undefined): string {
  return instant ? new Date(instant).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "";
}

function joinable(visit: Appointment, at: number): boolean {
  if (visit.status !== "booked" || !visit.extension?.some((e) => e.url === VIRTUAL) || !visit.start) return false;
  const start = Date.parse(visit.start);
  return start - JOIN_BEFORE_MS <= at && at <= start + JOIN_AFTER_MS;
}

// The questionnaire being filled stays open across live re-renders.
let answering: string | null = null;

// The room links of the visits joined in this tab. The list is repainted on every live event
// and on every (re)connect of its socket, and the first join itself changes the Appointment:
// a link kept only in the DOM was gone again as soon as the repaint came.
const joined = new Map<string, string>();

function joinLink(url: string): HTMLElement {
  return element("a", { href: url, target: "_blank", rel: "noopener", class: "join-link" },
    "Open the video visit");
}

async function join(ctx: ViewContext, visit: Appointment): Promise<void> {
  const answer = await operation<{ parameter?: { name: string; valueUrl?: string }[] }>(
    ctx.client, `Appointment/${visit.id}/$join`);
  const url = answer.parameter?.find((p) => p.name === "url")?.valueUrl;
  if (!url) throw new Error("$join answered no url");
  joined.set(visit.id, url);
  // The slot shown now, which may be a repaint's and not the one clicked.
  ctx.root.querySelector(`li[data-id="${CSS.escape(visit.id)}"] .join`)?.replaceChildren(joinLink(url));
  ctx.say("Your video visit is ready: open it.");
}

async function questionnaireFor(ctx: ViewContext, task: Task, visit: Appointment): Promise<HTMLElement> {
  const canonical = task.input?.find((i) => i.valueCanonical)?.valueCanonical;
  if (!canonical) return element("p", {}, "The questionnaire is missing.");
  const found = resources<Questionnaire>(await ctx.client.request(
    `Questionnaire?url=${encodeURIComponent(canonical.split("|")[0])}`) as { entry?: { resource?: Questionnaire }[] });
  const questionnaire = found[0];
  if (!questionnaire) return element("p", {}, "The questionnaire could not be found.");
  const node = form(questionnaire, `q-${visit.id}`);
  node.append(element("p", {}, element("button", { type: "submit" }, "Send my answers"), " ",
    element("button", { type: "button", class: "secondary", "data-action": "close" }, "Later")));
  node.querySelector("[data-action=close]")?.addEventListener("click", () => {
    answering = null;
    node.remove();
  });
  node.addEventListener("submit", (event) => {
    event.preventDefault();
    void (async () => {
      const saved = await create(ctx.client, response(questionnaire, canonical, node, ctx.me.patient, ctx.me.user) as never) as { id?: string };
      const done = copy(task);
      done.status = "completed";
      done.output = [{ type: { text: "questionnaire-response" }, valueReference: { reference: `QuestionnaireResponse/${saved.id}` } }];
      await update(ctx.client, done as never);
      answering = null;
      ctx.say("Thank you: your answers were sent.");
      await visits.render(ctx);
    })().catch(ctx.fail);
  });
  return element("section", { class: "questionnaire", "aria-label": `Pre-visit questionnaire for ${when(visit.start)}` },
    element("h3", {}, questionnaire.title ?? "Pre-visit questionnaire"), node);
}

async function render(ctx: ViewContext): Promise<void> {
  const today = new Date(Date.now() - JOIN_AFTER_MS).toISOString();
  const [found, tasks] = await Promise.all([
    ctx.client.request(`Appointment?patient=${ctx.me.patient}&date=ge${today}&_sort=date&_count=50`),
    ctx.client.request(`Task?patient=${ctx.me.patient}&code=${VISIT_TASKS}|pre-visit-questionnaire&_count=100`)
      .catch(() => ({})),
  ]) as [{ entry?: { resource?: Appointment }[] }, { entry?: { resource?: Task }[] }];
  const byVisit = new Map<string, Task>();
  for (const task of resources<Task>(tasks)) {
    if (task.focus?.reference && task.status !== "cancelled") byVisit.set(task.focus.reference, task);
  }
  const now = Date.now();
  const items = await Promise.all(resources<Appointment>(found).map(async (visit) => {
    const actions = element("div", { class: "actions" });
    const link = joined.get(visit.id);
    if (link) {
      actions.append(element("span", { class: "join" }, joinLink(link)));
    } else if (joinable(visit, now)) {
      const button = element("button", { type: "button", "data-action": "join" }, "Join the video visit");
      button.addEventListener("click", () => { join(ctx, visit).catch(ctx.fail); });
      actions.append(element("span", { class: "join" }, button));
    }
    const task = byVisit.get(`Appointment/${visit.id}`);
    let questionnaire: HTMLElement | null = null;
    if (task && task.status === "completed") {
      actions.append(element("span", { class: "done" }, "Questionnaire answered"));
    } else if (task && !ctx.me.onBehalf) {
      const button = element("button", { type: "button", "data-action": "questionnaire", "aria-expanded": String(answering === visit.id) },
        "Answer the pre-visit questionnaire");
      button.addEventListener("click", () => { answering = visit.id; visits.render(ctx).catch(ctx.fail); });
      actions.append(button);
      if (answering === visit.id) questionnaire = await questionnaireFor(ctx, task, visit);
    }
    return element("li", { "data-id": visit.id },
      element("span", { class: "when" }, when(visit.start)), " — ",
      element("span", {}, visit.description ?? visit.serviceType?.[0]?.text ?? "Visit"), " ",
      element("span", { class: `badge ${visit.status}` }, visit.status), actions, ...(questionnaire ? [questionnaire] : []));
  }));
  const keep = ctx.root.querySelector("form");
  if (keep && answering) return; // never repaint under a form being filled in
  ctx.root.replaceChildren(element("section", { "aria-labelledby": "visits-title", id: "visits" },
    element("h2", { id: "visits-title" }, "My upcoming visits"),
    items.length ? element("ul", { class: "cards" }, ...items) : element("p", { class: "empty" }, "No upcoming visits.")));
}

export const visits: View = {
  id: "visits",
  title: "Visits",
  live: (me) => ({ topic: "appointment-status", filters: [`Appointment?patient=${me.patient}`] }),
  render,
};

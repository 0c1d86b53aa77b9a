// The coordinator dashboard: the worklists of the signed-in Practitioner (or PractitionerRole),
// read through the FHIR API with the user's own token (`user/` scopes).
import { type Client, connect, count, element, resources, showError } from "../shared/smart.js";

interface Reference { reference?: string; display?: string }
interface Task {
  id: string;
  status: string;
  priority?: string;
  description?: string;
  code?: { text?: string; coding?: { code?: string; display?: string }[] };
  for?: Reference;
  owner?: Reference;
  restriction?: { period?: { end?: string } };
  meta?: { lastUpdated?: string };
}

const OPEN = "requested,received,accepted,ready,in-progress,on-hold";

interface Worklist { id: string; title: string; query: (me: string) => string }

const WORKLISTS: Worklist[] = [
  { id: "mine", title: "My tasks", query: (me) => `Task?owner=${me}&status=${OPEN}&_sort=-_lastUpdated` },
  { id: "pool", title: "Team pool", query: () => `Task?owner:missing=true&status=${OPEN}&_sort=-_lastUpdated` },
];

function label(task: Task): string {
  return task.description ?? task.code?.text ?? task.code?.coding?.[0]?.display ?? task.code?.coding?.[0]?.code
    ?? `Task/${task.id}`;
}

function row(task: Task, now: Date): HTMLElement {
  const due = task.restriction?.period?.end;
  const overdue = due !== undefined && new Date(due) < now;
  const tr = element("tr", { "data-id": task.id, class: overdue ? "overdue" : "" },
    element("td", { "data-label": "Task" }, label(task)),
    element("td", { "data-label": "Status" }, task.status),
    element("td", { "data-label": "Priority" }, task.priority ?? "routine"),
    element("td", { "data-label": "Due" }, due ? `${due.slice(0, 10)}${overdue ? " (overdue)" : ""}` : "—"),
    element("td", { "data-label": "Patient" }, task.for?.display ?? task.for?.reference ?? "—"));
  return tr;
}

async function show(client: Client, list: Worklist, me: string): Promise<void> {
  const section = document.getElementById("worklist") as HTMLElement;
  const bundle = (await client.request(list.query(me) + "&_count=50")) as { entry?: { resource?: Task }[] };
  const tasks = resources<Task>(bundle);
  const now = new Date();
  const heading = element("h2", { id: "worklist-title" }, list.title);
  const table = element("table", { "aria-labelledby": "worklist-title" },
    element("thead", {}, element("tr", {}, ...["Task", "Status", "Priority", "Due", "Patient"]
      .map((h) => element("th", { scope: "col" }, h)))),
    element("tbody", {}, ...tasks.map((t) => row(t, now))));
  const empty = element("p", { class: "empty" }, "Nothing here.");
  section.replaceChildren(heading, tasks.length ? table : empty);
  for (const link of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
    link.toggleAttribute("aria-current", link.dataset.list === list.id);
  }
}

async function main(): Promise<void> {
  const client = await connect();
  const me = client.getFhirUser() ?? "";
  (document.getElementById("user") as HTMLElement).textContent = me;
  const nav = document.querySelector("nav ul") as HTMLElement;
  nav.replaceChildren(...WORKLISTS.map((list) => {
    const badge = element("sl-badge", { pill: "", variant: "neutral", id: `count-${list.id}` }, "…");
    const link = element("a", { href: `#${list.id}`, "data-list": list.id }, list.title, " ", badge);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      show(client, list, me).catch(showError);
    });
    return element("li", {}, link);
  }));
  await Promise.all(WORKLISTS.map(async (list) => {
    const n = await count(client, list.query(me));
    const badge = document.getElementById(`count-${list.id}`) as HTMLElement;
    badge.textContent = String(n);
    badge.setAttribute("aria-label", `${n} tasks`);
  }));
  const first = WORKLISTS.find((l) => `#${l.id}` === location.hash) ?? WORKLISTS[0];
  await show(client, first, me);
  (document.getElementById("status") as HTMLElement).textContent = "ready";
}

main().catch(showError);

// Hand-offs waiting for me: requests to take over a Task (docs/workflows.md "Hand-off") whose
// proposed owner is me or one of my roles; accept or reject (with a reason) each.
import { element } from "../../shared/smart.js";
import type { View, ViewContext } from "../view.js";
import { type Column, conceptText, refText, Worklist } from "../worklist.js";
import { accept, COORDINATION, reject, type Task, taskLabel } from "./tasks.js";
import { actionButton } from "../worklist.js";

const HANDOFF = `code=${encodeURIComponent(`${COORDINATION}|handoff`)}`;
const WAITING = "requested,received";

const columns: Column<Task>[] = [
  { label: "Hand-off", cell: (t) => taskLabel(t) },
  { label: "From", cell: (t, _now, names) => refText(t.requester, names) },
  { label: "Task", cell: (t) => refText(t.focus) },
  { label: "Patient", cell: (t, _now, names) => refText(t.for, names) },
  { label: "Notes", cell: (t) => element("ul", { class: "notes" }, ...(t.input ?? []).map((i) =>
    element("li", {}, `${conceptText(i.type).replace(/^i-pass-|^sbar-/, "")}: ${i.valueString ?? refText(i.valueReference)}`))) },
  { label: "Status", cell: (t) => t.status },
];

const list = new Worklist<Task>({
  id: "handoffs",
  query: (ctx: ViewContext) => `Task?${HANDOFF}&owner=${ctx.me.refs.map(encodeURIComponent).join(",")}`,
  filters: [{ label: "Waiting", value: `&status=${WAITING}` }, { label: "All", value: "" }],
  sorts: [{ label: "Oldest first", value: "_lastUpdated" }, { label: "Newest first", value: "-_lastUpdated" }],
  include: ["Task:patient", "Task:requester"],
  columns,
  actions: (t, ctx) => WAITING.split(",").includes(t.status)
    ? [actionButton(ctx, "Accept", "accept", () => accept(ctx, t), taskLabel(t)), actionButton(ctx, "Reject", "reject", () => reject(ctx, t), taskLabel(t))]
    : [],
  empty: "No hand-offs are waiting for you.",
});

export const handoffs: View = {
  id: "handoffs",
  title: "Hand-offs",
  count: (ctx) => ctx.count(`Task?${HANDOFF}&owner=${ctx.me.refs.map(encodeURIComponent).join(",")}&status=${WAITING}`),
  live: (me) => ({ topic: "task-status", filters: [`Task?owner=${me.refs.map(encodeURIComponent).join(",")}`] }),
  render: (ctx) => list.render(ctx, "Hand-offs waiting for me"),
};

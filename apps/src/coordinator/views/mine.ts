// My Tasks: owned by me or one of my roles, open; overdue ones highlighted.
import type { View } from "../view.js";
import { Worklist } from "../worklist.js";
import { owners, rowClass, type Task, TASK_COLUMNS, TASK_SORTS, taskActions, taskFilters, OPEN } from "./tasks.js";

// Hand-offs and referrals have worklists of their own.
const NOT_HANDOFF = `&code:not=${encodeURIComponent("http://fhir.care-coord.example/CodeSystem/coordination-task-code|handoff")}`
  + `&code:not=${encodeURIComponent("http://hl7.org/fhir/CodeSystem/task-code|fulfill")}`;

const list = new Worklist<Task>({
  id: "mine",
  query: (ctx) => `Task?owner=${owners(ctx.me.refs)}${NOT_HANDOFF}`,
  filters: taskFilters(),
  sorts: TASK_SORTS,
  include: ["Task:patient"],
  columns: TASK_COLUMNS,
  rowClass,
  actions: taskActions,
  empty: "No open Tasks of yours.",
});

export const mine: View = {
  id: "mine",
  title: "My tasks",
  count: (ctx) => ctx.count(`Task?owner=${owners(ctx.me.refs)}${NOT_HANDOFF}&status=${OPEN}`),
  live: (me) => ({ topic: "task-status", filters: [`Task?owner=${owners(me.refs)}`] }),
  render: (ctx) => list.render(ctx, "My tasks"),
};

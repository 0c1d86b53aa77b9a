// My teams' pool: open Tasks nobody owns, waiting for a performer of one of my roles (the
// Task's `performerType`, which the hand-off escalation sets to the CareTeam role), for anyone
// of my teams to accept.
import type { Me, View, ViewContext } from "../view.js";
import { Worklist } from "../worklist.js";
import { OPEN, rowClass, type Task, TASK_COLUMNS, TASK_SORTS, taskActions, taskFilters } from "./tasks.js";

function query(me: Me): string {
  const roles = me.roleCodes.length ? `&performer=${me.roleCodes.map(encodeURIComponent).join(",")}` : "";
  return `Task?owner:missing=true${roles}`;
}

const list = new Worklist<Task>({
  id: "pool",
  query: (ctx: ViewContext) => query(ctx.me),
  filters: taskFilters(),
  sorts: TASK_SORTS,
  include: ["Task:patient"],
  columns: TASK_COLUMNS,
  rowClass,
  actions: taskActions,
  empty: "The pool is empty.",
});

export const pool: View = {
  id: "pool",
  title: "Team pool",
  count: (ctx) => ctx.count(`${query(ctx.me)}&status=${OPEN}`),
  // Every Task status change: a Task leaves the pool when someone claims it (its owner is then
  // set, so no owner filter could see it go).
  live: () => ({ topic: "task-status", filters: [] }),
  render: (ctx) => list.render(ctx, "Team pool"),
};

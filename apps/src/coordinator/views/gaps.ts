// Open care gaps: the Tasks the care-gap workflow writes (code v3-ActCode CAREGAP, owner the
// plan's CareTeam) for my CareTeams, or for me.
import type { View, ViewContext } from "../view.js";
import { type Column, refText, Worklist } from "../worklist.js";
import { OPEN, type Task, TASK_SORTS, taskActions, taskLabel } from "./tasks.js";

const CAREGAP = `code=${encodeURIComponent("http://terminology.hl7.org/CodeSystem/v3-ActCode|CAREGAP")}`;

// The user's CareTeams, read (once) before the first count or paint that needs them: the
// worklist's query is built synchronously from them.
let teams: string[] = [];

function query(ctx: ViewContext): string {
  const owners = [...teams, ...ctx.me.refs].map(encodeURIComponent).join(",");
  return `Task?${CAREGAP}&owner=${owners}`;
}

const columns: Column<Task>[] = [
  { label: "Care gap", cell: (t) => taskLabel(t) },
  { label: "Since", cell: (t) => t.restriction?.period?.start?.slice(0, 10) ?? "—" },
  { label: "Patient", cell: (t, _now, names) => refText(t.for, names) },
  { label: "Team", cell: (t) => refText(t.owner) },
  { label: "Status", cell: (t) => t.status },
];

const list = new Worklist<Task>({
  id: "gaps",
  query,
  filters: [{ label: "Open", value: `&status=${OPEN}` }, { label: "Closed", value: "&status=completed,cancelled" }],
  sorts: TASK_SORTS.filter((s) => s.value !== "due"),
  include: ["Task:patient"],
  columns,
  actions: taskActions,
  empty: "No open care gaps.",
});

export const gaps: View = {
  id: "gaps",
  title: "Care gaps",
  count: async (ctx) => {
    teams = await ctx.me.careTeams();
    return ctx.count(`${query(ctx)}&status=${OPEN}`);
  },
  live: () => ({ topic: "task-status", filters: ["Task?code=http://terminology.hl7.org/CodeSystem/v3-ActCode|CAREGAP"] }),
  render: async (ctx) => {
    teams = await ctx.me.careTeams();
    await list.render(ctx, "Open care gaps");
  },
};

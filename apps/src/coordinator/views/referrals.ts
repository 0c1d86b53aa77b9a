// Referrals (docs/workflows.md "Closed-loop referral"): the `fulfill` Tasks received (owner = me
// or my roles) or sent (requester), grouped by BSeR businessStatus; a received one is accepted
// or declined here.
import type { View, ViewContext } from "../view.js";
import { actionButton, type Column, conceptText, refText, Worklist } from "../worklist.js";
import { accept, reject, type Task, taskLabel } from "./tasks.js";

const FULFILL = `code=${encodeURIComponent("http://hl7.org/fhir/CodeSystem/task-code|fulfill")}`;

const columns: Column<Task>[] = [
  { label: "Referral", cell: (t) => taskLabel(t) },
  { label: "Status", cell: (t) => t.status },
  { label: "From", cell: (t, _now, names) => refText(t.requester, names) },
  { label: "To", cell: (t, _now, names) => refText(t.owner, names) },
  { label: "Patient", cell: (t, _now, names) => refText(t.for, names) },
];

const refs = (ctx: ViewContext) => ctx.me.refs.map(encodeURIComponent).join(",");

const list = new Worklist<Task>({
  id: "referrals",
  query: () => `Task?${FULFILL}`,
  // The side is the filter: one search each (FHIR search has no OR across two parameters).
  filters: [],
  sorts: [{ label: "Most recently changed", value: "-_lastUpdated" }, { label: "Oldest first", value: "_lastUpdated" }],
  include: ["Task:patient", "Task:requester", "Task:owner"],
  columns,
  group: (t) => conceptText(t.businessStatus) || "(no business status)",
  actions: (t, ctx) => ["requested", "received"].includes(t.status) && t.owner?.reference
    && ctx.me.refs.includes(t.owner.reference)
    ? [actionButton(ctx, "Accept", "accept", () => accept(ctx, t), taskLabel(t)), actionButton(ctx, "Decline", "reject", () => reject(ctx, t), taskLabel(t))]
    : [],
  empty: "No referrals.",
});

export const referrals: View = {
  id: "referrals",
  title: "Referrals",
  count: (ctx) => ctx.count(`Task?${FULFILL}&owner=${refs(ctx)}&status=requested,received`),
  live: () => ({ topic: "task-status", filters: ["Task?code=http://hl7.org/fhir/CodeSystem/task-code|fulfill"] }),
  render: async (ctx) => {
    if (!list.spec.filters.length) {
      list.spec.filters.push({ label: "Received", value: `&owner=${refs(ctx)}` },
        { label: "Sent", value: `&requester=${refs(ctx)}` });
      list.filter = list.spec.filters[0].value;
    }
    await list.render(ctx, "Referrals");
  },
};

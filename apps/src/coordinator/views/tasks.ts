// What the Task worklists share: their columns, their filters and sorts, and the actions on a
// Task (accept, reject, reassign as a hand-off with notes, complete with an output). Each
// action is one FHIR write with the user's token; the server's rules decide, and a refusal is
// shown as the server worded it.
import { ask } from "../../shared/dialog.js";
import { copy, create, type Resource, update } from "../../shared/fhir.js";
import type { ViewContext } from "../view.js";
import {
  actionButton, type Choice, type CodeableConcept, type Column, conceptText, dueCell, type Reference, refText,
} from "../worklist.js";

export interface Task extends Resource {
  resourceType: "Task";
  id: string;
  status: string;
  intent?: string;
  priority?: string;
  description?: string;
  businessStatus?: CodeableConcept;
  statusReason?: CodeableConcept;
  code?: CodeableConcept;
  focus?: Reference;
  for?: Reference;
  owner?: Reference;
  requester?: Reference;
  performerType?: CodeableConcept[];
  restriction?: { period?: { start?: string; end?: string } };
  input?: { type: CodeableConcept; valueString?: string; valueReference?: Reference }[];
  output?: { type: CodeableConcept; valueString?: string; valueReference?: Reference }[];
}

export const OPEN = "requested,received,accepted,ready,in-progress,on-hold";
export const COORDINATION = "http://fhir.care-coord.example/CodeSystem/coordination-task-code";
const NOTE_SECTION = "http://fhir.care-coord.example/CodeSystem/handoff-note-section";

export function taskLabel(task: Task): string {
  return task.description ?? (conceptText(task.code) || `Task/${task.id}`);
}

export function isOverdue(task: Task, now: Date): boolean {
  const due = task.restriction?.period?.end;
  return due !== undefined && new Date(due) < now;
}

export const TASK_COLUMNS: Column<Task>[] = [
  { label: "Task", cell: (t) => taskLabel(t) },
  { label: "Status", cell: (t) => t.status },
  { label: "Priority", cell: (t) => t.priority ?? "routine" },
  { label: "Due", cell: (t, now) => dueCell(t.restriction?.period?.end, now) },
  { label: "Patient", cell: (t, _now, names) => refText(t.for, names) },
];

/** The filters every Task worklist offers: the server filters (status, priority, `due`). */
export function taskFilters(): Choice[] {
  const now = new Date().toISOString();
  return [
    { label: "All open", value: `&status=${OPEN}` },
    { label: "Overdue", value: `&status=${OPEN}&due=lt${encodeURIComponent(now)}` },
    { label: "Urgent or higher", value: `&status=${OPEN}&priority=urgent,asap,stat` },
    { label: "Requested", value: "&status=requested" },
    { label: "In progress", value: "&status=in-progress" },
  ];
}

export const TASK_SORTS: Choice[] = [
  { label: "Due date", value: "due" },
  { label: "Most recently changed", value: "-_lastUpdated" },
  { label: "Priority", value: "-priority" },
  { label: "Status", value: "status" },
];

export function rowClass(task: Task, now: Date): string {
  return isOverdue(task, now) ? "overdue" : "";
}

/** The actions a Task's row offers, by its status. `mine`: the user (one of `me.refs`) is to
 * own it when accepting (the pool's claim). */
export function taskActions(task: Task, ctx: ViewContext): HTMLElement[] {
  const buttons: HTMLElement[] = [];
  const open = OPEN.split(",").includes(task.status);
  if (["requested", "received", "ready"].includes(task.status) || (!task.owner && open)) {
    buttons.push(actionButton(ctx, "Accept", "accept", () => accept(ctx, task), taskLabel(task)));
  }
  if (["requested", "received"].includes(task.status)) {
    buttons.push(actionButton(ctx, "Reject", "reject", () => reject(ctx, task), taskLabel(task)));
  }
  if (open && task.owner) {
    buttons.push(actionButton(ctx, "Reassign", "reassign", () => reassign(ctx, task), taskLabel(task)));
  }
  if (open && task.status !== "requested") {
    buttons.push(actionButton(ctx, "Complete", "complete", () => complete(ctx, task), taskLabel(task)));
  }
  return buttons;
}

/** Accepts; a Task of the pool (no owner) becomes the user's. */
export async function accept(ctx: ViewContext, task: Task): Promise<void> {
  const next = copy(task);
  next.status = "accepted";
  if (!next.owner) {
    next.owner = { reference: ctx.me.user };
    delete next.performerType;
  }
  await update(ctx.client, next);
}

export async function reject(ctx: ViewContext, task: Task): Promise<void> {
  const answer = await ask(`Reject “${taskLabel(task)}”`, [
    { name: "reason", label: "Reason (the requester sees it)", kind: "textarea", required: true }], "Reject");
  if (!answer) return;
  const next = copy(task);
  next.status = "rejected";
  next.statusReason = { text: answer.reason };
  await update(ctx.client, next);
}

/** Reassigning is a hand-off (docs/workflows.md "Hand-off"): a Task asking the new owner to take
 * this one over, with the notes as I-PASS sections; the new owner accepts or rejects it. */
export async function reassign(ctx: ViewContext, task: Task): Promise<void> {
  const answer = await ask(`Hand off “${taskLabel(task)}”`, [
    { name: "owner", label: "New owner (e.g. PractitionerRole/123)", required: true,
      suggestions: await colleagues(ctx) },
    { name: "summary", label: "Patient summary", kind: "textarea" },
    { name: "actions", label: "Action list", kind: "textarea", required: true },
  ], "Hand off");
  if (!answer) return;
  const requester = task.owner?.reference && ctx.me.refs.includes(task.owner.reference)
    ? task.owner.reference : ctx.me.user;
  const input = [
    ["i-pass-patient-summary", answer.summary],
    ["i-pass-action-list", answer.actions],
  ].filter(([, v]) => v).map(([code, v]) => ({ type: { coding: [{ system: NOTE_SECTION, code }] }, valueString: v }));
  await create(ctx.client, {
    resourceType: "Task", status: "requested", intent: "order",
    code: { coding: [{ system: COORDINATION, code: "handoff" }], text: "Hand-off" },
    description: `Hand-off: ${taskLabel(task)}`,
    focus: { reference: `Task/${task.id}` },
    ...(task.for ? { for: task.for } : {}),
    requester: { reference: requester },
    owner: { reference: answer.owner },
    input,
  });
}

export async function complete(ctx: ViewContext, task: Task): Promise<void> {
  const answer = await ask(`Complete “${taskLabel(task)}”`, [
    { name: "output", label: "Outcome", kind: "textarea", required: true }], "Complete");
  if (!answer) return;
  const next = copy(task);
  next.status = "completed";
  next.output = [...(next.output ?? []), { type: { text: "outcome" }, valueString: answer.output }];
  await update(ctx.client, next);
}

/** `owner=a,b` for the user and their roles: one search, either of them. */
export function owners(refs: string[]): string {
  return refs.map(encodeURIComponent).join(",");
}

interface Directory { resourceType: string; id: string; name?: string | { text?: string; family?: string; given?: string[] }[];
  code?: CodeableConcept[]; practitioner?: Reference }

/** Whom a Task may be handed to, offered while typing: active PractitionerRoles (with their
 * practitioner's name) and my CareTeams; one search each, read with the user's token. */
async function colleagues(ctx: ViewContext): Promise<{ value: string; label: string }[]> {
  const bundle = (await ctx.client.request(
    "PractitionerRole?active=true&_include=PractitionerRole:practitioner&_count=100")) as
    { entry?: { resource?: Directory }[] };
  const all = (bundle.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : []));
  const named = new Map(all.filter((r) => r.resourceType === "Practitioner").map((p) => {
    const n = Array.isArray(p.name) ? p.name[0] : undefined;
    return [`Practitioner/${p.id}`, n?.text ?? [...(n?.given ?? []), n?.family ?? ""].join(" ").trim()];
  }));
  const roles = all.filter((r) => r.resourceType === "PractitionerRole").map((r) => ({
    value: `PractitionerRole/${r.id}`,
    label: [named.get(r.practitioner?.reference ?? "") || r.practitioner?.reference, conceptText(r.code?.[0])]
      .filter(Boolean).join(", "),
  }));
  return [...roles.filter((r) => !ctx.me.refs.includes(r.value)),
    ...(await ctx.me.careTeams()).map((t) => ({ value: t, label: "a CareTeam of mine" }))];
}

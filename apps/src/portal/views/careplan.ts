// My care plan: the active CarePlans, their activities (what, when, status) and their goals.
import { element, resources } from "../../shared/smart.js";
import type { View, ViewContext } from "../view.js";

interface Activity {
  detail?: { description?: string; status?: string; code?: { text?: string };
    scheduledString?: string; scheduledPeriod?: { start?: string; end?: string } };
  reference?: { display?: string };
}
interface CarePlan {
  resourceType: "CarePlan"; id: string; title?: string; description?: string; status: string;
  activity?: Activity[]; goal?: { reference?: string }[];
}
interface Goal { resourceType: "Goal"; id: string; lifecycleStatus?: string; description?: { text?: string } }

function activityText(activity: Activity): string {
  const detail = activity.detail;
  const what = detail?.description ?? detail?.code?.text ?? activity.reference?.display ?? "Activity";
  return `${what} (${detail?.status ?? "unknown"})`;
}

async function render(ctx: ViewContext): Promise<void> {
  const bundle = await ctx.client.request(
    `CarePlan?subject=${ctx.me.patient}&status=active&_include=CarePlan:goal&_count=20`) as
    { entry?: { resource?: CarePlan | Goal }[] };
  const all = resources<CarePlan | Goal>(bundle);
  const goals = new Map(all.filter((r): r is Goal => r.resourceType === "Goal").map((g) => [`Goal/${g.id}`, g]));
  const plans = all.filter((r): r is CarePlan => r.resourceType === "CarePlan");
  const sections = plans.map((plan) => {
    const planGoals = (plan.goal ?? []).flatMap((g) => (g.reference && goals.get(g.reference) ? [goals.get(g.reference) as Goal] : []));
    return element("article", { "data-plan": plan.id, "aria-labelledby": `plan-${plan.id}` },
      element("h3", { id: `plan-${plan.id}` }, plan.title ?? "Care plan"),
      ...(plan.description ? [element("p", {}, plan.description)] : []),
      element("h4", {}, "Activities"),
      (plan.activity ?? []).length
        ? element("ul", { class: "activities" }, ...(plan.activity ?? []).map((a) => element("li", { "data-plan": plan.id }, activityText(a))))
        : element("p", { class: "empty" }, "No activities."),
      ...(planGoals.length ? [element("h4", {}, "Goals"), element("ul", { class: "goals" },
        ...planGoals.map((g) => element("li", { "data-id": g.id }, `${g.description?.text ?? "Goal"} (${g.lifecycleStatus ?? ""})`)))] : []));
  });
  ctx.root.replaceChildren(element("section", { "aria-labelledby": "careplan-title", id: "careplan" },
    element("h2", { id: "careplan-title" }, "My care plan"),
    ...(sections.length ? sections : [element("p", { class: "empty" }, "No active care plan.")])));
}

export const careplan: View = {
  id: "careplan",
  title: "Care plan",
  live: (me) => ({ topic: "careplan-activity", filters: [`CarePlan?patient=${me.patient}`] }),
  render,
};

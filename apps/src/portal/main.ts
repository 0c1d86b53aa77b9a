// The patient portal: the signed-in patient's (or, as the patient's Consent allows, a family
// member's) upcoming visits and care plan, read with their own token (`patient/` scopes).
import { type Client, connect, element, resources, showError } from "../shared/smart.js";

interface Appointment {
  id: string;
  status: string;
  start?: string;
  description?: string;
  serviceType?: { text?: string }[];
}
interface CarePlan {
  id: string;
  title?: string;
  status: string;
  activity?: { detail?: { description?: string; status?: string; code?: { text?: string } } }[];
}

function list(id: string, title: string, items: HTMLElement[]): HTMLElement {
  return element("section", { "aria-labelledby": `${id}-title`, id },
    element("h2", { id: `${id}-title` }, title),
    items.length ? element("ul", {}, ...items) : element("p", { class: "empty" }, "Nothing here."));
}

async function main(): Promise<void> {
  const client: Client = await connect();
  const patient = client.getPatientId();
  if (!patient) throw new Error("no patient in context");
  const who = client.getFhirUser() ?? "";
  (document.getElementById("user") as HTMLElement).textContent =
    who.startsWith("RelatedPerson/") ? `${who}, on behalf of Patient/${patient}` : who;
  const now = new Date().toISOString().slice(0, 10);
  const [visits, plans] = await Promise.all([
    client.request(`Appointment?patient=${patient}&date=ge${now}&_sort=date&_count=20`),
    client.request(`CarePlan?subject=Patient/${patient}&status=active&_count=20`),
  ]) as [{ entry?: { resource?: Appointment }[] }, { entry?: { resource?: CarePlan }[] }];
  const visitItems = resources<Appointment>(visits).map((a) =>
    element("li", { "data-id": a.id },
      `${(a.start ?? "").replace("T", " ").slice(0, 16)} — ${a.description ?? a.serviceType?.[0]?.text ?? "Visit"}`,
      " ", element("sl-badge", { variant: a.status === "booked" ? "success" : "neutral" }, a.status)));
  const activityItems = resources<CarePlan>(plans).flatMap((plan) => (plan.activity ?? []).map((activity) =>
    element("li", { "data-plan": plan.id },
      `${activity.detail?.description ?? activity.detail?.code?.text ?? "Activity"} (${activity.detail?.status ?? "unknown"})`)));
  (document.getElementById("content") as HTMLElement).replaceChildren(
    list("visits", "My upcoming visits", visitItems),
    list("careplan", "My care plan", activityItems));
  (document.getElementById("status") as HTMLElement).textContent = "ready";
}

main().catch(showError);

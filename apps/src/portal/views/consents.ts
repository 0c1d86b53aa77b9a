// Who may see my record: my family members (RelatedPersons of my record) and what each may see.
// A grant is one patient-privacy Consent per family member (identifier: FAMILY_ACCESS |
// RelatedPerson/<id>), as docs/consent.md reads them: base policy OPTOUT (everyone else as
// before), a root provision denying that person everything, and nested permits for the kinds
// of data I chose (the most specific provision decides). Revoking keeps the Consent and takes
// every permit out: a revoked family member sees nothing, where an inactive Consent would
// leave them the server's default. Only I change my Consents; a family member sees them.
import { copy, create, update } from "../../shared/fhir.js";
import { element, resources } from "../../shared/smart.js";
import type { View, ViewContext } from "../view.js";

export const FAMILY_ACCESS = "http://fhir.care-coord.example/CodeSystem/portal-family-access";
const RESOURCE_TYPES = "http://hl7.org/fhir/resource-types";
// What a family member can be given, each as the resource types it covers. My Patient record
// itself (my name) comes with any grant: the portal says on whose behalf they act.
export const KINDS: [string, string, string[]][] = [
  ["visits", "Visits", ["Appointment", "Encounter"]],
  ["careplan", "Care plan", ["CarePlan", "Goal"]],
  ["messages", "Messages", ["Communication"]],
  ["documents", "Documents", ["DocumentReference"]],
  ["tasks", "Tasks and questionnaires", ["Task", "QuestionnaireResponse"]],
];

interface Reference { reference?: string }
interface Provision { type?: string; actor?: { reference?: Reference }[]; class?: { system?: string; code?: string }[]; provision?: Provision[] }
interface Consent {
  resourceType: "Consent"; id: string; status: string; meta?: { versionId?: string };
  identifier?: { system?: string; value?: string }[]; provision?: Provision;
}
interface RelatedPerson { resourceType: "RelatedPerson"; id: string; name?: { text?: string; given?: string[]; family?: string }[];
  relationship?: { text?: string; coding?: { display?: string }[] }[] }

function personName(person: RelatedPerson): string {
  const n = person.name?.[0];
  return n?.text ?? ([...(n?.given ?? []), n?.family ?? ""].join(" ").trim() || `RelatedPerson/${person.id}`);
}

/** The kinds a grant Consent permits (none once revoked). */
export function granted(consent: Consent | undefined): string[] {
  if (!consent || consent.status !== "active") return [];
  const types = new Set((consent.provision?.provision ?? []).filter((p) => p.type === "permit")
    .flatMap((p) => (p.class ?? []).map((c) => c.code)));
  return KINDS.filter(([, , covers]) => covers.every((t) => types.has(t))).map(([kind]) => kind);
}

function grantConsent(patient: string, person: string, kinds: string[], previous?: Consent): Record<string, unknown> {
  const actor = [{ role: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", code: "IRCP" }] },
    reference: { reference: person } }];
  const types = ["Patient", ...KINDS.filter(([k]) => kinds.includes(k)).flatMap(([, , covers]) => covers)];
  const consent: Record<string, unknown> = {
    ...(previous ? copy(previous) : {}),
    resourceType: "Consent", status: "active",
    identifier: [{ system: FAMILY_ACCESS, value: person }],
    scope: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/consentscope", code: "patient-privacy" }] },
    category: [{ coding: [{ system: "http://loinc.org", code: "59284-0" }] }],
    patient: { reference: patient }, performer: [{ reference: patient }], dateTime: new Date().toISOString(),
    policyRule: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: "OPTOUT" }] },
    provision: {
      type: "deny", actor,
      ...(kinds.length ? { provision: [{ type: "permit", actor, class: types.map((code) => ({ system: RESOURCE_TYPES, code })) }] } : {}),
    },
  };
  return consent;
}

// Boxes ticked but not saved yet, per family member: a live repaint (someone else's change,
// or the Subscription's reconnect) keeps them instead of resetting the form under the hand.
const unsaved = new Map<string, Set<string>>();

async function render(ctx: ViewContext): Promise<void> {
  const [people, consents] = await Promise.all([
    ctx.client.request(`RelatedPerson?patient=${ctx.me.patient}&_count=50`) as Promise<{ entry?: { resource?: RelatedPerson }[] }>,
    ctx.client.request(`Consent?patient=${ctx.me.patient}&identifier=${encodeURIComponent(FAMILY_ACCESS)}|&_count=100`) as
      Promise<{ entry?: { resource?: Consent }[] }>,
  ]);
  const byPerson = new Map<string, Consent>();
  for (const c of resources<Consent>(consents)) {
    const who = c.identifier?.find((i) => i.system === FAMILY_ACCESS)?.value;
    if (who) byPerson.set(who, c);
  }
  if (ctx.me.onBehalf) {
    const mine = granted(byPerson.get(ctx.me.user));
    ctx.root.replaceChildren(element("section", { "aria-labelledby": "consents-title", id: "consents" },
      element("h2", { id: "consents-title" }, `What ${ctx.me.patientName} shares with you`),
      mine.length ? element("ul", { id: "shared-with-me" }, ...KINDS.filter(([k]) => mine.includes(k)).map(([k, label]) => element("li", { "data-kind": k }, label)))
        : element("p", { class: "empty" }, "Nothing is shared with you."),
      element("p", {}, "Only the patient changes who may see their record.")));
    return;
  }
  const rows = resources<RelatedPerson>(people).map((person) => {
    const ref = `RelatedPerson/${person.id}`;
    const consent = byPerson.get(ref);
    const now = granted(consent);
    const ticked = unsaved.get(person.id) ?? new Set(now);
    const boxes = KINDS.map(([kind, label]) => {
      const box = element("input", { type: "checkbox", id: `grant-${person.id}-${kind}`, name: kind, value: kind,
        ...(ticked.has(kind) ? { checked: "" } : {}) }) as HTMLInputElement;
      box.addEventListener("change", () => {
        const mine = unsaved.get(person.id) ?? new Set(ticked);
        if (box.checked) mine.add(kind);
        else mine.delete(kind);
        unsaved.set(person.id, mine);
      });
      return element("p", {}, box, " ", element("label", { for: `grant-${person.id}-${kind}` }, label));
    });
    const form = element("form", { "aria-label": `Access for ${personName(person)}`, "data-person": person.id },
      element("fieldset", {}, element("legend", {}, `What ${personName(person)} may see`), ...boxes),
      element("p", {}, element("button", { type: "submit", "data-action": "grant" }, now.length ? "Save access" : "Grant access"), " ",
        ...(now.length ? [element("button", { type: "button", class: "danger", "data-action": "revoke" }, "Revoke all access")] : []))) as HTMLFormElement;
    const save = (kinds: string[]): void => {
      unsaved.delete(person.id);
      const next = grantConsent(ctx.me.patient, ref, kinds, consent);
      (consent ? update(ctx.client, next as never) : create(ctx.client, next as never))
        .then(() => { ctx.say(kinds.length ? `Access saved for ${personName(person)}.` : `Access revoked for ${personName(person)}.`); return consentsView.render(ctx); })
        .catch(ctx.fail);
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      save(KINDS.map(([k]) => k).filter((k) => (form.elements.namedItem(k) as HTMLInputElement).checked));
    });
    form.querySelector("[data-action=revoke]")?.addEventListener("click", () => save([]));
    const relation = person.relationship?.[0]?.text ?? person.relationship?.[0]?.coding?.[0]?.display;
    // Without a Consent of mine about them, nothing narrows what their sign-in allows: say so.
    const said = now.length ? `Sees: ${KINDS.filter(([k]) => now.includes(k)).map(([, l]) => l).join(", ")}`
      : consent ? "Sees nothing of your record"
        : "You have not chosen yet: until you do, nothing limits what their sign-in to your record shows them";
    return element("li", { "data-id": person.id, "data-access": now.join(" ") || (consent ? "none" : "unset") },
      element("h3", {}, personName(person), relation ? ` (${relation})` : ""),
      element("p", { class: "access" }, said),
      form);
  });
  ctx.root.replaceChildren(element("section", { "aria-labelledby": "consents-title", id: "consents" },
    element("h2", { id: "consents-title" }, "Who may see my record"),
    element("p", {}, "Your care team sees your record as before. Here you choose what each family member sees."),
    rows.length ? element("ul", { class: "cards" }, ...rows) : element("p", { class: "empty" }, "No family members are on your record.")));
}

const consentsView: View = {
  id: "consents",
  title: "Sharing",
  live: (me) => ({ topic: "consent-changed", filters: [`Consent?patient=${me.patient}`] }),
  render,
  leave: () => unsaved.clear(),
};
export { consentsView as consents };

// My communication preferences, kept where FHIR keeps them and where the reminders read them
// (workflows/visit.py): the preferred channel is my lowest-`rank` ContactPoint among email,
// sms and phone (Patient.telecom), the language my `preferred` Patient.communication.
// Saved as a PUT of my Patient, conditional on the version read (If-Match).
import { copy, update } from "../../shared/fhir.js";
import { element } from "../../shared/smart.js";
import type { View, ViewContext } from "../view.js";

const CHANNELS = [["email", "Email"], ["sms", "Text message (SMS)"], ["phone", "Phone call"]] as const;
const LANGUAGES = [["en", "English"], ["es", "Español"], ["fr", "Français"], ["de", "Deutsch"], ["nl", "Nederlands"]] as const;
const LANGUAGE_SYSTEM = "urn:ietf:bcp:47";

interface ContactPoint { system?: string; value?: string; rank?: number; use?: string }
interface Patient {
  resourceType: "Patient"; id: string; meta?: { versionId?: string }; telecom?: ContactPoint[];
  communication?: { language: { coding?: { system?: string; code?: string }[]; text?: string }; preferred?: boolean }[];
}

function preferredChannel(patient: Patient): string | null {
  const ranked = (patient.telecom ?? []).filter((t) => CHANNELS.some(([c]) => c === t.system))
    .sort((a, b) => (a.rank ?? 1e6) - (b.rank ?? 1e6));
  return ranked[0]?.system ?? null;
}

function preferredLanguage(patient: Patient): string | null {
  const chosen = patient.communication?.find((c) => c.preferred) ?? patient.communication?.[0];
  return chosen?.language.coding?.[0]?.code ?? null;
}

/** My Patient with the form's choices: the chosen channel ranked 1, the others after it. */
export function withPreferences(patient: Patient, channel: string, addresses: Record<string, string>, language: string): Patient {
  const changed = copy(patient);
  const others = (changed.telecom ?? []).filter((t) => !CHANNELS.some(([c]) => c === t.system));
  const mine: ContactPoint[] = [];
  let rank = 2;
  for (const [system] of CHANNELS) {
    const value = addresses[system]?.trim();
    if (!value) continue;
    mine.push({ system, value, rank: system === channel ? 1 : rank++ });
  }
  changed.telecom = [...mine, ...others];
  if (!changed.telecom.length) delete changed.telecom;
  const rest = (changed.communication ?? []).filter((c) => c.language.coding?.[0]?.code !== language)
    .map((c) => ({ ...c, preferred: false }));
  changed.communication = [{ language: { coding: [{ system: LANGUAGE_SYSTEM, code: language }] }, preferred: true }, ...rest];
  return changed;
}

async function render(ctx: ViewContext): Promise<void> {
  const patient = await ctx.client.request(ctx.me.patient) as Patient;
  const channel = preferredChannel(patient);
  const value = (system: string): string => patient.telecom?.find((t) => t.system === system)?.value ?? "";
  const language = preferredLanguage(patient) ?? "en";
  const radios = CHANNELS.map(([code, label]) => element("p", {},
    element("input", { type: "radio", name: "channel", id: `channel-${code}`, value: code, ...(code === channel ? { checked: "" } : {}) }),
    " ", element("label", { for: `channel-${code}` }, label)));
  const addresses = element("fieldset", {}, element("legend", {}, "Where to reach me"),
    element("p", {}, element("label", { for: "addr-email" }, "Email address"), " ",
      element("input", { type: "email", id: "addr-email", name: "email", value: value("email"), autocomplete: "email" })),
    element("p", {}, element("label", { for: "addr-sms" }, "Mobile number (text messages)"), " ",
      element("input", { type: "tel", id: "addr-sms", name: "sms", value: value("sms"), autocomplete: "tel" })),
    element("p", {}, element("label", { for: "addr-phone" }, "Phone number (calls)"), " ",
      element("input", { type: "tel", id: "addr-phone", name: "phone", value: value("phone"), autocomplete: "tel" })));
  const select = element("select", { id: "language", name: "language" },
    ...LANGUAGES.map(([code, label]) => element("option", { value: code, ...(code === language ? { selected: "" } : {}) }, label)));
  const form = element("form", { "aria-labelledby": "preferences-title" },
    element("fieldset", {}, element("legend", {}, "How reminders reach me"), ...radios),
    addresses,
    element("p", {}, element("label", { for: "language" }, "My language"), " ", select),
    element("p", {}, element("button", { type: "submit" }, "Save my preferences"))) as HTMLFormElement;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const chosen = String(data.get("channel") ?? "");
    const given = { email: String(data.get("email") ?? ""), sms: String(data.get("sms") ?? ""), phone: String(data.get("phone") ?? "") };
    if (chosen && !given[chosen as keyof typeof given].trim()) {
      ctx.fail(new Error(`give an address for ${chosen} first`));
      return;
    }
    update(ctx.client, withPreferences(patient, chosen, given, String(data.get("language") ?? "en")) as never)
      .then(() => { ctx.say("Your preferences were saved."); return preferences.render(ctx); })
      .catch(ctx.fail);
  });
  ctx.root.replaceChildren(element("section", { "aria-labelledby": "preferences-title", id: "preferences" },
    element("h2", { id: "preferences-title" }, "My communication preferences"),
    element("p", {}, "Visit reminders use the channel and language you choose here."), form));
}

export const preferences: View = { id: "preferences", title: "Preferences", patientOnly: true, render };

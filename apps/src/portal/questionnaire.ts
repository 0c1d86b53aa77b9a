// A Questionnaire drawn as a form, and the QuestionnaireResponse its answers make. Covers the
// item types a pre-visit questionnaire uses (display, group, string, text, boolean, integer,
// decimal, date, choice with answerOption codings or strings); a required item must be
// answered before the form submits (the browser says so, with the item's label).
import { element } from "../shared/smart.js";

export interface Coding { system?: string; code?: string; display?: string }
export interface Item {
  linkId: string;
  text?: string;
  type: string;
  required?: boolean;
  repeats?: boolean;
  item?: Item[];
  answerOption?: { valueCoding?: Coding; valueString?: string }[];
}
export interface Questionnaire { resourceType: "Questionnaire"; id?: string; url?: string; title?: string; item?: Item[] }
type Answer = Record<string, unknown>;
interface ResponseItem { linkId: string; text?: string; answer?: Answer[]; item?: ResponseItem[] }

const INPUT: Record<string, string> = { string: "text", integer: "number", decimal: "number", date: "date" };

function field(item: Item, prefix: string): HTMLElement {
  const id = `${prefix}-${item.linkId}`.replace(/[^A-Za-z0-9_-]/g, "_");
  const label = item.text ?? item.linkId;
  const required: Record<string, string> = item.required ? { required: "" } : {};
  if (item.type === "display") return element("p", {}, label);
  if (item.type === "group") {
    return element("fieldset", {}, element("legend", {}, label), ...(item.item ?? []).map((i) => field(i, id)));
  }
  if (item.type === "boolean") {
    return element("p", {}, element("input", { type: "checkbox", id, name: item.linkId }), " ",
      element("label", { for: id }, label));
  }
  if (item.type === "choice" && item.answerOption?.length) {
    const options = item.answerOption.map((o, n) =>
      element("option", { value: String(n) }, o.valueCoding?.display ?? o.valueCoding?.code ?? o.valueString ?? ""));
    return element("p", {}, element("label", { for: id }, label), " ",
      element("select", { id, name: item.linkId, ...required }, element("option", { value: "" }, "—"), ...options));
  }
  const control = item.type === "text"
    ? element("textarea", { id, name: item.linkId, rows: "3", ...required })
    : element("input", { id, name: item.linkId, type: INPUT[item.type] ?? "text",
      ...(item.type === "decimal" ? { step: "any" } : {} as Record<string, string>), ...required });
  return element("p", {}, element("label", { for: id }, label), " ", control);
}

/** The form: its fields carry `name` = the item's linkId. */
export function form(questionnaire: Questionnaire, prefix: string): HTMLFormElement {
  const node = element("form", { "aria-label": questionnaire.title ?? "Questionnaire" }) as HTMLFormElement;
  node.append(...(questionnaire.item ?? []).map((item) => field(item, prefix)));
  return node;
}

function answers(item: Item, node: HTMLFormElement): Answer[] {
  const control = node.elements.namedItem(item.linkId) as HTMLInputElement | HTMLSelectElement | null;
  if (!control) return [];
  if (item.type === "boolean") return [{ valueBoolean: (control as HTMLInputElement).checked }];
  const value = control.value.trim();
  if (value === "") return [];
  switch (item.type) {
    case "integer": return [{ valueInteger: Number.parseInt(value, 10) }];
    case "decimal": return [{ valueDecimal: Number(value) }];
    case "date": return [{ valueDate: value }];
    case "choice": {
      const option = item.answerOption?.[Number(value)];
      if (!option) return [];
      return [option.valueCoding ? { valueCoding: option.valueCoding } : { valueString: option.valueString }];
    }
    default: return [{ valueString: value }];
  }
}

function responseItems(items: Item[] | undefined, node: HTMLFormElement): ResponseItem[] {
  const out: ResponseItem[] = [];
  for (const item of items ?? []) {
    if (item.type === "display") continue;
    if (item.type === "group") {
      const inner = responseItems(item.item, node);
      if (inner.length) out.push({ linkId: item.linkId, text: item.text, item: inner });
      continue;
    }
    const answer = answers(item, node);
    if (answer.length) out.push({ linkId: item.linkId, text: item.text, answer });
  }
  return out;
}

/** The completed QuestionnaireResponse of the form's answers, by `subject`. */
export function response(questionnaire: Questionnaire, canonical: string, node: HTMLFormElement,
                         subject: string, author: string): Record<string, unknown> {
  return {
    resourceType: "QuestionnaireResponse", status: "completed", questionnaire: canonical,
    subject: { reference: subject }, author: { reference: author }, authored: new Date().toISOString(),
    item: responseItems(questionnaire.item, node),
  };
}

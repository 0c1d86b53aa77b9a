// A small modal form (the native <dialog>: focus is trapped and Escape cancels, with no code of
// ours) for what an action needs to know: a reason, notes, a new owner, a date.
import { element } from "./smart.js";

export interface Field {
  name: string;
  label: string;
  kind?: "text" | "textarea" | "date" | "datetime-local" | "select";
  required?: boolean;
  value?: string;
  options?: { value: string; label: string }[];
  /** Offered while typing (a <datalist>): the field still takes any text. */
  suggestions?: { value: string; label: string }[];
}

/** Asks; resolves with the values by field name, or null when cancelled. */
export function ask(title: string, fields: Field[], submit = "OK"): Promise<Record<string, string> | null> {
  return new Promise((resolve) => {
    const dialog = element("dialog", { "aria-labelledby": "dialog-title", class: "ask" }) as HTMLDialogElement;
    const form = element("form", { method: "dialog" }) as HTMLFormElement;
    const inputs = fields.map((f) => {
      const id = `ask-${f.name}`;
      let input: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement;
      if (f.kind === "textarea") {
        input = element("textarea", { id, name: f.name, rows: "3" }) as HTMLTextAreaElement;
      } else if (f.kind === "select") {
        input = element("select", { id, name: f.name }) as HTMLSelectElement;
        for (const o of f.options ?? []) input.append(element("option", { value: o.value }, o.label));
      } else {
        input = element("input", { id, name: f.name, type: f.kind ?? "text" }) as HTMLInputElement;
        if (f.suggestions?.length) {
          const list = element("datalist", { id: `${id}-list` },
            ...f.suggestions.map((o) => element("option", { value: o.value }, o.label)));
          input.setAttribute("list", list.id);
          form.append(list);
        }
      }
      input.required = f.required ?? false;
      if (f.value !== undefined) input.value = f.value;
      form.append(element("p", {}, element("label", { for: id }, f.label), input));
      return input;
    });
    const cancel = element("button", { type: "button", value: "cancel", "data-action": "cancel" }, "Cancel");
    form.append(element("p", { class: "buttons" }, cancel,
      element("button", { type: "submit", value: "ok", "data-action": "submit" }, submit)));
    dialog.append(element("h2", { id: "dialog-title" }, title), form);
    let answered = false;
    const finish = (values: Record<string, string> | null) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(values);
    };
    cancel.addEventListener("click", () => finish(null));
    dialog.addEventListener("close", () => finish(null));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      finish(Object.fromEntries(fields.map((f, i) => [f.name, inputs[i].value.trim()])));
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

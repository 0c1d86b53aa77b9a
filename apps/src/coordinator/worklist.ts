// A worklist: one FHIR search shown as a table, with a filter and a sort the user picks (both
// become search parameters: the server filters, sorts and pages), paged with the server's own
// cursors (the Bundle's `next` / `previous` links, followed as they are), and each row's
// actions. On a live change it asks for the page it shows again.
import { element, resources } from "../shared/smart.js";
import type { ViewContext } from "./view.js";

/** A column; `names` holds the display names of what the search included (`_include`). */
export interface Column<T> { label: string; cell: (row: T, now: Date, names: Names) => Node | string }
export type Names = Map<string, string>;
/** One option of the filter or the sort menu; `value` is query text (`&status=...`, `-priority`). */
export interface Choice { label: string; value: string }

interface Link { relation?: string; url?: string }
export interface Bundle<T> { entry?: { resource?: T; search?: { mode?: string } }[]; link?: Link[]; total?: number }

export interface WorklistSpec<T extends { id?: string }> {
  id: string;
  /** `_include`s whose resources name the rows' references (`Task:patient`): no request per row. */
  include?: string[];
  /** The search without filter, sort and count (`Task?owner=...&status=...`). */
  query: (ctx: ViewContext) => string;
  filters: Choice[];
  sorts: Choice[];
  columns: Column<T>[];
  /** `overdue`, say. */
  rowClass?: (row: T, now: Date) => string;
  /** Buttons for a row; each calls the FHIR API and then `ctx.changed()`. */
  actions?: (row: T, ctx: ViewContext) => HTMLElement[];
  /** Rows are shown in groups under these headings (e.g. by businessStatus). */
  group?: (row: T) => string;
  pageSize?: number;
  empty?: string;
}

export class Worklist<T extends { id?: string }> {
  filter = "";
  sort: string;
  private page: string | null = null; // the URL of the page shown (a server cursor), or null: the first
  private names: Names = new Map();

  constructor(readonly spec: WorklistSpec<T>) {
    this.filter = spec.filters[0]?.value ?? "";
    this.sort = spec.sorts[0]?.value ?? "";
  }

  /** The search of the first page (also what the navigation counts, without the filter). */
  first(ctx: ViewContext): string {
    const sort = this.sort ? `&_sort=${this.sort}` : "";
    const include = (this.spec.include ?? []).map((i) => `&_include=${i}`).join("");
    return `${this.spec.query(ctx)}${this.filter}${sort}${include}&_count=${this.spec.pageSize ?? 20}`;
  }

  async render(ctx: ViewContext, heading: string): Promise<void> {
    const bundle = (await ctx.client.request(this.page ?? this.first(ctx))) as Bundle<T>;
    const rows = resources<T>({ entry: (bundle.entry ?? []).filter((e) => e.search?.mode !== "include") });
    const names: Names = new Map();
    for (const e of bundle.entry ?? []) {
      if (e.search?.mode === "include" && e.resource) {
        const r = e.resource as unknown as Named;
        names.set(`${r.resourceType}/${r.id}`, displayName(r));
      }
    }
    this.names = names;
    const now = new Date();
    const id = this.spec.id;
    const title = element("h2", { id: `${id}-title` }, heading);
    const toolbar = element("div", { class: "toolbar" },
      this.menu(ctx, `${id}-filter`, "Show", this.spec.filters, this.filter, (v) => { this.filter = v; }),
      this.menu(ctx, `${id}-sort`, "Sort by", this.spec.sorts, this.sort, (v) => { this.sort = v; }));
    const body: HTMLElement[] = [];
    if (!rows.length) {
      body.push(element("p", { class: "empty" }, this.spec.empty ?? "Nothing here."));
    } else if (this.spec.group) {
      const groups = new Map<string, T[]>();
      for (const row of rows) {
        const g = this.spec.group(row);
        groups.set(g, [...(groups.get(g) ?? []), row]);
      }
      for (const [name, members] of groups) {
        const gid = `${id}-group-${body.length}`;
        body.push(element("section", { class: "group", "data-group": name },
          element("h3", { id: gid }, `${name} (${members.length})`), this.table(ctx, members, now, gid)));
      }
    } else {
      body.push(this.table(ctx, rows, now, `${id}-title`));
    }
    const pager = element("nav", { class: "pager", "aria-label": "Pages" },
      this.pageButton(ctx, bundle, "previous", "Previous page"),
      this.pageButton(ctx, bundle, "next", "Next page"));
    ctx.root.replaceChildren(title, toolbar, ...body, pager);
  }

  private table(ctx: ViewContext, rows: T[], now: Date, labelledBy: string): HTMLElement {
    const headers = [...this.spec.columns.map((c) => c.label), ...(this.spec.actions ? ["Actions"] : [])];
    return element("table", { "aria-labelledby": labelledBy },
      element("thead", {}, element("tr", {}, ...headers.map((h) => element("th", { scope: "col" }, h)))),
      element("tbody", {}, ...rows.map((row) => {
        const cells = this.spec.columns.map((c) => element("td", { "data-label": c.label }, c.cell(row, now, this.names)));
        if (this.spec.actions) {
          const buttons = this.spec.actions(row, ctx);
          cells.push(element("td", { "data-label": "Actions", class: "actions" }, ...(buttons.length ? buttons : ["—"])));
        }
        return element("tr", { "data-id": row.id ?? "", class: this.spec.rowClass?.(row, now) ?? "" }, ...cells);
      })));
  }

  private menu(ctx: ViewContext, id: string, label: string, choices: Choice[], current: string,
               set: (value: string) => void): HTMLElement {
    const select = element("select", { id, name: id }) as HTMLSelectElement;
    for (const c of choices) {
      const option = element("option", { value: c.value }, c.label) as HTMLOptionElement;
      option.selected = c.value === current;
      select.append(option);
    }
    select.addEventListener("change", () => {
      set(select.value);
      this.page = null; // a new search starts on its first page
      this.render(ctx, (document.getElementById(`${this.spec.id}-title`)?.textContent) ?? "")
        .then(() => document.getElementById(id)?.focus())
        .catch(ctx.fail);
    });
    return element("label", { for: id }, `${label} `, select);
  }

  private pageButton(ctx: ViewContext, bundle: Bundle<T>, relation: string, text: string): HTMLElement {
    const url = bundle.link?.find((l) => l.relation === relation || (relation === "previous" && l.relation === "prev"))?.url;
    const button = element("button", { type: "button", "data-page": relation }, text) as HTMLButtonElement;
    button.disabled = !url;
    button.addEventListener("click", () => {
      this.page = url ?? null;
      this.render(ctx, (document.getElementById(`${this.spec.id}-title`)?.textContent) ?? "").catch(ctx.fail);
    });
    return button;
  }
}

// ---- cells shared by the worklists

export interface Reference { reference?: string; display?: string }
export interface CodeableConcept { text?: string; coding?: { system?: string; code?: string; display?: string }[] }

interface Named { resourceType: string; id: string; name?: { text?: string; family?: string; given?: string[] }[] | string }

function displayName(r: Named): string {
  if (typeof r.name === "string") return r.name;
  const n = r.name?.[0];
  const text = n?.text ?? [...(n?.given ?? []), n?.family ?? ""].join(" ").trim();
  return text || `${r.resourceType}/${r.id}`;
}

/** A reference as a person reads it: its display, the included resource's name, else the reference. */
export function refText(ref: Reference | undefined, names?: Names): string {
  return ref?.display ?? (ref?.reference ? names?.get(ref.reference) ?? ref.reference : "—");
}

export function conceptText(c: CodeableConcept | undefined): string {
  return c?.text ?? c?.coding?.[0]?.display ?? c?.coding?.[0]?.code ?? "";
}

/** A date and whether it has passed, for the "Due" column. */
export function dueCell(due: string | undefined, now: Date): Node | string {
  if (!due) return "—";
  const overdue = new Date(due) < now;
  return element("span", overdue ? { class: "overdue-flag" } : {}, `${due.slice(0, 10)}${overdue ? " (overdue)" : ""}`);
}

/** A button that runs an action, shows its failure where the user looks, then refreshes. */
export function actionButton(ctx: ViewContext, text: string, name: string, run: () => Promise<unknown>,
                             about?: string): HTMLElement {
  // `about` names the row: a screen reader hears "Accept: Call the patient", not ten "Accept"s.
  const button = element("button", { type: "button", "data-action": name, ...(about ? { "aria-label": `${text}: ${about}` } : {}) },
    text) as HTMLButtonElement;
  button.addEventListener("click", () => {
    button.disabled = true;
    run().then(() => ctx.changed(), (error: unknown) => { button.disabled = false; ctx.fail(error); });
  });
  return button;
}

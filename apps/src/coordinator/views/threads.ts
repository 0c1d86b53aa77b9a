// Threads (docs/messaging.md): the user's threads, one thread's messages, a reply, and per
// message the participants for whom some system has *rendered* it — a render cursor says how
// far a system attempted to render the thread for a person, never that anyone read it.
// Opening a thread advances the user's own render cursor for this app (the server takes the
// token's client_id as the source) as its messages come into view.
import { beyondMyCursor } from "../../shared/inbox.js";
import { type Client, element, resources } from "../../shared/smart.js";
import type { View } from "../view.js";

// FHIR JSON as it comes: read defensively, field by field.
type R = Record<string, any>;

export const THREAD_TAG = "http://fhir.care-coord.example/CodeSystem/messaging|thread";
const PAGES = 5;
const CURSOR_DELAY = 250; // ms: one $render-cursor for a burst of messages scrolled into view

interface Parameter { name: string; part?: Parameter[]; valueReference?: { reference?: string }; valueInteger?: number }

function part(p: Parameter, name: string): Parameter | undefined {
  return p.part?.find((q) => q.name === name);
}

/** $render-state → per participant, the message their furthest cursor (over every source) is at. */
export function furthest(state: { parameter?: Parameter[] }): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  for (const p of state.parameter ?? []) {
    if (p.name !== "participant" || !p.part) continue;
    const who = part(p, "participant")?.valueReference?.reference;
    if (who) out.set(who, part(p, "furthest")?.valueReference?.reference);
  }
  return out;
}

/** For each message (in thread order), the participants some system rendered it for: those
 * whose furthest cursor is at it or at a later message. */
export function renderedFor(messageRefs: string[], cursors: Map<string, string | undefined>): string[][] {
  const out: string[][] = messageRefs.map(() => []);
  for (const [who, at] of cursors) {
    const upTo = at ? messageRefs.indexOf(at) : -1;
    for (let i = 0; i <= upTo; i++) out[i].push(who);
  }
  return out;
}

function who(ref: R | undefined): string {
  return ref?.display ?? ref?.reference ?? "?";
}

async function list(client: Client, host: HTMLElement, me: string): Promise<void> {
  const bundle = await client.request(`Communication?participant=${encodeURIComponent(me)}&_tag=${encodeURIComponent(THREAD_TAG)}&_sort=-_lastUpdated&_count=50`) as R;
  const beyond = await beyondMyCursor(client, me, resources<R>(bundle).map((t) => `Communication/${t.id}`));
  const threads = resources<R>(bundle);
  host.replaceChildren(element("h2", { id: "view-title" }, "Threads"),
    threads.length
      ? element("ul", { id: "threads", class: "threads" }, ...threads.map((t) => {
        const n = beyond.get(`Communication/${t.id}`) ?? 0;
        return element("li", { "data-id": t.id },
          element("a", { href: `#threads/${t.id}` }, t.topic?.text ?? "(no subject)"),
          ` · ${who(t.subject)}`,
          n ? element("sl-badge", { variant: "primary", pill: "", "aria-label": `${n} not rendered for you` }, String(n)) : "");
      }))
      : element("p", { class: "empty" }, "No thread."));
}

// Watches the open thread's messages come into view (one paint's at a time).
let observer: IntersectionObserver | null = null;

async function thread(client: Client, host: HTMLElement, me: string, id: string): Promise<void> {
  const ref = `Communication/${encodeURIComponent(id)}`;
  const [header, messages, state] = await Promise.all([
    client.request(ref) as Promise<R>,
    client.request(`Communication?part-of=${ref}&_sort=sent&_count=100`, { pageLimit: PAGES, flat: true }) as Promise<R[]>,
    client.request(`${ref}/$render-state`) as Promise<{ parameter?: Parameter[] }>,
  ]);
  const refs = messages.map((m) => `Communication/${m.id}`);
  const items = messages.map((m) => element("li", { "data-id": m.id, class: "message" },
    element("p", { class: "meta" }, `${who(m.sender)} · ${(m.sent ?? "").slice(0, 16).replace("T", " ")}`),
    element("p", { class: "body" }, (m.payload ?? []).map((p: R) => p.contentString ?? p.contentAttachment?.title ?? "").join(" ")),
    element("p", { class: "rendered", "aria-live": "polite" })));
  const showRendered = (s: { parameter?: Parameter[] }): void => {
    renderedFor(refs, furthest(s)).forEach((people, i) => {
      const line = items[i].querySelector(".rendered") as HTMLElement;
      line.dataset.rendered = people.join(" ");
      line.textContent = people.length ? `Rendered for: ${people.join(", ")}` : "Not rendered for anyone yet";
    });
  };
  showRendered(state);

  // Advance my cursor to the furthest message displayed (the server keeps only the furthest).
  let shown = -1, sent = -1, timer: number | undefined;
  const advance = async (): Promise<void> => {
    timer = undefined;
    if (shown <= sent) return;
    const at = shown;
    await client.request({ url: `${ref}/$render-cursor`, method: "POST",
      headers: { "Content-Type": "application/fhir+json" },
      body: JSON.stringify({ resourceType: "Parameters", parameter: [
        { name: "participant", valueReference: { reference: me } },
        { name: "message", valueReference: { reference: refs[at] } }] }) });
    sent = Math.max(sent, at);
    showRendered(await client.request(`${ref}/$render-state`) as { parameter?: Parameter[] });
  };
  observer?.disconnect(); // the previous paint's messages are gone from the page
  observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) shown = Math.max(shown, items.indexOf(e.target as HTMLElement));
    }
    if (shown > sent && timer === undefined) {
      timer = window.setTimeout(() => { advance().catch(console.error); }, CURSOR_DELAY);
    }
  }, { threshold: 0.5 });

  const text = element("textarea", { id: "reply-text", name: "reply", rows: "3", required: "", "aria-label": "Reply" });
  const form = element("form", { id: "reply", "aria-label": "Reply to the thread" }, text,
    element("button", { type: "submit" }, "Send"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = (text as HTMLTextAreaElement).value.trim();
    if (!body) return;
    const message: R = { resourceType: "Communication", status: "completed", partOf: [{ reference: ref }],
      payload: [{ contentString: body }] };
    if (header.subject) message.subject = header.subject;
    if (refs.length) message.inResponseTo = [{ reference: refs[refs.length - 1] }];
    client.create(message).then(() => thread(client, host, me, id)).catch((error: unknown) => {
      form.append(element("p", { role: "alert", class: "error" }, error instanceof Error ? error.message : String(error)));
    });
  });
  const people = (header.extension ?? []).filter((e: R) => e.url?.endsWith("/thread-participant"))
    .map((e: R) => e.valueReference?.reference).filter(Boolean);
  host.replaceChildren(
    element("h2", { id: "view-title", "data-thread": id }, header.topic?.text ?? "(no subject)"),
    element("p", {}, element("a", { href: "#threads" }, "All threads"), ` · ${who(header.subject)} · participants: ${people.join(", ")}`),
    items.length ? element("ol", { id: "messages", class: "messages" }, ...items) : element("p", { class: "empty" }, "No message yet."),
    form);
  for (const li of items) observer.observe(li);
}

/** `#threads` lists the user's threads, `#threads/<id>` opens one. */
export function threadOf(hash: string): string {
  return decodeURIComponent(hash.replace(/^#/, "")).split("/")[1] ?? "";
}

/** Threads. Live: messages of the open thread, or to the user (the topic `communication-received`). */
export const threads: View = {
  id: "threads",
  title: "Threads",
  live: (me) => {
    const id = threadOf(location.hash);
    return { topic: "communication-received",
      filters: [id ? `Communication?thread=Communication/${id}` : `Communication?recipient=${me.user}`] };
  },
  render: (ctx) => {
    const id = threadOf(location.hash);
    return id ? thread(ctx.client, ctx.root, ctx.me.user, id) : list(ctx.client, ctx.root, ctx.me.user);
  },
};

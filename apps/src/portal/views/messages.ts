// My messages: my threads (the inbox: `Communication/$render-state?participant=` me, how many
// messages lie beyond my furthest render cursor), a thread's messages, replying, and my render
// cursor advancing (`$render-cursor`, source = this app) as messages come into view: a message
// counts as rendered once it was on screen, never merely because the thread was fetched.
import { create, operation } from "../../shared/fhir.js";
import { beyondMyCursor } from "../../shared/inbox.js";
import { element, resources } from "../../shared/smart.js";
import type { View, ViewContext } from "../view.js";

const THREAD_TAG = "http://fhir.care-coord.example/CodeSystem/messaging|thread";

interface Communication {
  resourceType: "Communication"; id: string; sent?: string; topic?: { text?: string };
  sender?: { reference?: string; display?: string }; payload?: { contentString?: string }[];
  status?: string; meta?: { lastUpdated?: string };
}

let open: string | null = null; // the thread on screen
let observer: IntersectionObserver | null = null;
let rendered = new Map<string, number>(); // thread → the furthest index I reported (this page's life)

function watch(ctx: ViewContext, thread: string, items: HTMLElement[], ids: string[]): void {
  observer?.disconnect();
  // Reports the furthest message seen; the server keeps only forward moves.
  let pending: number | null = null;
  const report = (): void => {
    if (pending === null) return;
    const index = pending;
    pending = null;
    operation(ctx.client, `Communication/${thread}/$render-cursor`, [
      { name: "participant", valueReference: { reference: ctx.me.user } },
      { name: "message", valueReference: { reference: `Communication/${ids[index]}` } },
      { name: "source", valueString: ctx.me.clientId },
    ]).then(() => {
      const list = document.getElementById("thread-messages");
      if (list) list.dataset.rendered = ids[index];
    }).catch(ctx.fail);
  };
  observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const index = Number((entry.target as HTMLElement).dataset.index);
      if (index > (rendered.get(thread) ?? -1)) {
        rendered.set(thread, index);
        pending = index;
      }
    }
    window.setTimeout(report, 300); // one request for a screenful, not one per message
  }, { threshold: 0.6 });
  for (const item of items) observer.observe(item);
}

async function showThread(ctx: ViewContext, thread: string): Promise<HTMLElement> {
  const [header, bundle] = await Promise.all([
    ctx.client.request(`Communication/${thread}`) as Promise<Communication>,
    ctx.client.request(`Communication?part-of=Communication/${thread}&_sort=sent&_count=200`) as
      Promise<{ entry?: { resource?: Communication }[] }>,
  ]);
  const messages = resources<Communication>(bundle).filter((m) => m.status !== "entered-in-error");
  const items = messages.map((m, index) => element("li", { "data-id": m.id, "data-index": String(index) },
    element("p", { class: "meta" }, `${m.sender?.display ?? m.sender?.reference ?? ""} · ${m.sent ? new Date(m.sent).toLocaleString() : ""}`),
    element("p", {}, m.payload?.map((p) => p.contentString ?? "").join(" ") ?? "")));
  const reply = element("form", { "aria-label": "Reply" },
    element("label", { for: "reply-text" }, "Your reply"),
    element("textarea", { id: "reply-text", name: "text", rows: "3", required: "" }),
    element("button", { type: "submit" }, "Send"));
  reply.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = (reply.querySelector("textarea") as HTMLTextAreaElement).value.trim();
    if (!text) return;
    (reply.querySelector("textarea") as HTMLTextAreaElement).value = "";
    create(ctx.client, {
      resourceType: "Communication", status: "completed",
      partOf: [{ reference: `Communication/${thread}` }],
      ...(messages.length ? { inResponseTo: [{ reference: `Communication/${messages[messages.length - 1].id}` }] } : {}),
      subject: { reference: ctx.me.patient }, payload: [{ contentString: text }],
    }).then(() => { ctx.say("Your reply was sent."); return messagesView.render(ctx); }).catch(ctx.fail);
  });
  const back = element("button", { type: "button", class: "secondary" }, "All my threads");
  back.addEventListener("click", () => { open = null; observer?.disconnect(); messagesView.render(ctx).catch(ctx.fail); });
  const list = element("ol", { id: "thread-messages", class: "messages", "aria-label": "Messages" }, ...items);
  const section = element("section", { "aria-labelledby": "thread-title", id: "thread", "data-id": thread },
    back, element("h3", { id: "thread-title" }, header.topic?.text ?? "Conversation"),
    items.length ? list : element("p", { class: "empty" }, "No messages yet."), reply);
  queueMicrotask(() => watch(ctx, thread, items, messages.map((m) => m.id)));
  return section;
}

async function render(ctx: ViewContext): Promise<void> {
  const threads = await ctx.client.request(`Communication?participant=${encodeURIComponent(ctx.me.user)}&_tag=${encodeURIComponent(THREAD_TAG)}&_sort=-_lastUpdated&_count=50`) as
    { entry?: { resource?: Communication }[] };
  const beyond = await beyondMyCursor(ctx.client, ctx.me.user,
    resources<Communication>(threads).map((t) => `Communication/${t.id}`));
  const typing = (document.getElementById("reply-text") as HTMLTextAreaElement | null)?.value ?? "";
  const items = resources<Communication>(threads).map((t) => {
    const unrendered = beyond.get(`Communication/${t.id}`) ?? 0;
    const link = element("button", { type: "button", class: "link", "data-thread": t.id },
      t.topic?.text ?? "Conversation");
    link.addEventListener("click", () => { open = t.id; messagesView.render(ctx).catch(ctx.fail); });
    return element("li", { "data-id": t.id }, link, " ",
      unrendered ? element("span", { class: "badge new", "data-beyond": String(unrendered) }, `${unrendered} new`) : "");
  });
  const parts: HTMLElement[] = [element("h2", { id: "messages-title" }, "My messages"),
    items.length ? element("ul", { class: "threads" }, ...items) : element("p", { class: "empty" }, "No conversations yet.")];
  if (open) parts.push(await showThread(ctx, open));
  ctx.root.replaceChildren(element("section", { "aria-labelledby": "messages-title", id: "messages" }, ...parts));
  const again = document.getElementById("reply-text") as HTMLTextAreaElement | null;
  if (again && typing) again.value = typing; // a live repaint keeps what I was typing
}

const messagesView: View = {
  id: "messages",
  title: "Messages",
  live: (me) => ({ topic: "communication-received", filters: [`Communication?patient=${me.patient}`] }),
  render,
  leave: () => { open = null; observer?.disconnect(); observer = null; rendered = new Map(); },
};
export { messagesView as messages };

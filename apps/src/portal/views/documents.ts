// My documents: the current DocumentReferences, each attachment downloadable. The content is
// fetched with my token (a Binary read, or the attachment's inline data) and handed to the
// browser as a file; no link carries a token.
import { element, resources } from "../../shared/smart.js";
import type { View, ViewContext } from "../view.js";

interface Attachment { contentType?: string; url?: string; data?: string; title?: string }
interface DocumentReference {
  resourceType: "DocumentReference"; id: string; description?: string; date?: string;
  type?: { text?: string; coding?: { display?: string }[] }; content?: { attachment?: Attachment }[];
}

function bytesOf(base64: string): Uint8Array {
  const raw = atob(base64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

async function content(ctx: ViewContext, attachment: Attachment): Promise<Blob> {
  const type = attachment.contentType ?? "application/octet-stream";
  if (attachment.data) return new Blob([bytesOf(attachment.data) as BlobPart], { type });
  if (!attachment.url) throw new Error("the attachment has neither data nor url");
  // A Binary of this server, read as a FHIR resource so that its JSON (not its raw bytes)
  // answers: the SMART client then adds my token as for every request.
  const binary = await ctx.client.request({ url: attachment.url, headers: { Accept: "application/fhir+json" } }) as
    { contentType?: string; data?: string };
  return new Blob([bytesOf(binary.data ?? "") as BlobPart], { type: binary.contentType ?? type });
}

function download(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const link = element("a", { href: url, download: name }) as HTMLAnchorElement;
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function render(ctx: ViewContext): Promise<void> {
  const bundle = await ctx.client.request(
    `DocumentReference?patient=${ctx.me.patient}&status=current&_sort=-date&_count=50`) as
    { entry?: { resource?: DocumentReference }[] };
  const items = resources<DocumentReference>(bundle).map((doc) => {
    const title = doc.description ?? doc.type?.text ?? doc.type?.coding?.[0]?.display ?? "Document";
    const buttons = (doc.content ?? []).flatMap((c, n) => {
      const attachment = c.attachment;
      if (!attachment) return [];
      const name = attachment.title ?? `${title}-${n + 1}`;
      const button = element("button", { type: "button", "data-action": "download", "aria-label": `Download ${name}` }, `Download ${name}`);
      button.addEventListener("click", () => {
        content(ctx, attachment).then((blob) => download(blob, name)).catch(ctx.fail);
      });
      return [button];
    });
    return element("li", { "data-id": doc.id },
      element("span", {}, title), doc.date ? ` · ${new Date(doc.date).toLocaleDateString()}` : "", " ",
      element("span", { class: "actions" }, ...buttons));
  });
  ctx.root.replaceChildren(element("section", { "aria-labelledby": "documents-title", id: "documents" },
    element("h2", { id: "documents-title" }, "My documents"),
    items.length ? element("ul", { class: "cards" }, ...items) : element("p", { class: "empty" }, "No documents.")));
}

export const documents: View = {
  id: "documents",
  title: "Documents",
  live: (me) => ({ topic: "documentreference-added", filters: [`DocumentReference?patient=${me.patient}`] }),
  render,
};

// Writes both apps make through the FHIR API: an update that cannot overwrite someone else's
// change (If-Match on the version read), a create, and an operation with a Parameters body.
import type { Client } from "./smart.js";

export interface Resource { resourceType: string; id?: string; meta?: { versionId?: string }; [key: string]: unknown }

const JSON_FHIR = { "Content-Type": "application/fhir+json" };

/** PUT, conditional on the version read: a concurrent change answers 412 instead of being lost. */
export async function update<T extends Resource>(client: Client, resource: T): Promise<T> {
  const headers: Record<string, string> = { ...JSON_FHIR };
  if (resource.meta?.versionId) headers["If-Match"] = `W/"${resource.meta.versionId}"`;
  return (await client.request({ url: `${resource.resourceType}/${resource.id}`, method: "PUT",
    headers, body: JSON.stringify(resource) })) as T;
}

export async function create<T extends Resource>(client: Client, resource: T): Promise<T> {
  return (await client.request({ url: resource.resourceType, method: "POST", headers: JSON_FHIR,
    body: JSON.stringify(resource) })) as T;
}

export interface Parameter { name: string; [value: string]: unknown }

/** POST [url] with a Parameters body (`$book`, `$cancel`, `$join`...). */
export async function operation<T = unknown>(client: Client, url: string, parameter: Parameter[] = []): Promise<T> {
  return (await client.request({ url, method: "POST", headers: JSON_FHIR,
    body: JSON.stringify({ resourceType: "Parameters", parameter }) })) as T;
}

/** A fresh copy to change (never mutate what a search answered while it is on screen). */
export function copy<T>(resource: T): T {
  return JSON.parse(JSON.stringify(resource)) as T;
}

interface Issue { severity?: string; code?: string; diagnostics?: string; details?: { text?: string } }

/** What went wrong, in the server's words: an OperationOutcome's error issues (the SMART
 * client puts the body after the status line), else the message. */
export function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const body = message.indexOf("\n\n");
  if (body >= 0) {
    try {
      const outcome = JSON.parse(message.slice(body + 2)) as { resourceType?: string; issue?: Issue[] };
      if (outcome.resourceType === "OperationOutcome") {
        const issues = (outcome.issue ?? []).filter((i) => i.severity === "error" || i.severity === "fatal");
        const text = issues.map((i) => i.diagnostics ?? i.details?.text ?? i.code).join("; ");
        return `${message.split("\n")[0]}: ${text}`;
      }
    } catch {
      // not JSON: the message as it is
    }
  }
  return message.split("\nURL:")[0];
}

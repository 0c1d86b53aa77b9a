// The inbox (`Communication/$render-state?participant=`, docs/messaging.md): per thread, how
// many messages lie beyond the participant's furthest render cursor. The server answers it a
// page at a time, newest activity first; a view that lists threads follows `next` until every
// thread it shows has its count (or the pages end), so a thread off the first page is not
// shown as having nothing new.
import type { Client } from "./smart.js";

interface Parameter {
  name: string; part?: Parameter[]; valueReference?: { reference?: string }; valueInteger?: number; valueUri?: string;
}

const MAX_PAGES = 20; // 1,000 threads at the server's 50 per page

function part(p: Parameter, name: string): Parameter | undefined {
  return p.part?.find((q) => q.name === name);
}

/** Thread reference ("Communication/id") → messages beyond my cursor, for `wanted` threads. */
export async function beyondMyCursor(client: Client, participant: string, wanted: Iterable<string>): Promise<Map<string, number>> {
  const missing = new Set(wanted);
  const beyond = new Map<string, number>();
  let url: string | undefined = `Communication/$render-state?participant=${encodeURIComponent(participant)}`;
  for (let page = 0; url && missing.size && page < MAX_PAGES; page++) {
    const answer = (await client.request(url)) as { parameter?: Parameter[] };
    url = undefined;
    for (const p of answer.parameter ?? []) {
      if (p.name === "next") url = p.valueUri;
      if (p.name !== "thread") continue;
      const ref = part(p, "thread")?.valueReference?.reference;
      if (!ref) continue;
      beyond.set(ref, part(p, "beyond")?.valueInteger ?? 0);
      missing.delete(ref);
    }
  }
  return beyond;
}

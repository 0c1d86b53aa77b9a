// The SMART launch both apps share: the SMART JS client (fhirclient's browser bundle, the
// global FHIR, served from /apps/vendor/) does the authorization code flow with PKCE; it keeps
// its state and the token in sessionStorage (gone with the tab), never in localStorage.
import type Client from "fhirclient/lib/Client";

interface SmartGlobal {
  oauth2: {
    authorize(options: Record<string, unknown>): Promise<string | void>;
    ready(): Promise<Client>;
  };
}
declare const FHIR: SmartGlobal;

export interface AppConfig {
  clientId: string;
  iss: string;
  scope: string;
  title: string;
}

export type { Client };

/** Connects the app: finishes a launch (the authorization server sent us back with a code),
 * or starts one — an EHR launch when the EHR gave `iss` and `launch`, else a standalone launch
 * against this server. Resolves with a ready client; a launch navigates away. */
export async function connect(): Promise<Client> {
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error") || sessionStorage.getItem("SMART_KEY")) {
    if (params.has("error")) {
      throw new Error(`${params.get("error")}: ${params.get("error_description") ?? ""}`);
    }
    return FHIR.oauth2.ready();
  }
  const config = (await (await fetch("config.json")).json()) as AppConfig;
  await FHIR.oauth2.authorize({
    clientId: config.clientId,
    // An EHR launch asks for its launch context; a standalone one has none to ask for.
    scope: params.has("launch") ? `launch ${config.scope}` : config.scope,
    iss: params.get("iss") ?? config.iss,
    launch: params.get("launch") ?? undefined,
    redirectUri: location.pathname,
    pkceMode: "required",
  });
  return new Promise<Client>(() => undefined); // the browser is on its way to authorize
}

/** Entries' resources of a search Bundle. */
export function resources<T>(bundle: { entry?: { resource?: T }[] }): T[] {
  return (bundle.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : []));
}

/** How many resources match (`_summary=count`): the counts in the navigation. */
export async function count(client: Client, query: string): Promise<number> {
  const sep = query.includes("?") ? "&" : "?";
  const bundle = (await client.request(`${query}${sep}_summary=count`)) as { total?: number };
  return bundle.total ?? 0;
}

/** An element (an HTML one, or a Shoelace component such as `sl-badge`). */
export function element(
  tag: string, attributes: Record<string, string> = {}, ...children: (Node | string)[]
): HTMLElement {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** Shows what went wrong where the user looks, not only in the console. */
export function showError(error: unknown): void {
  const status = document.getElementById("status");
  if (status) {
    status.textContent = `error: ${error instanceof Error ? error.message : String(error)}`;
    status.setAttribute("role", "alert");
  }
}

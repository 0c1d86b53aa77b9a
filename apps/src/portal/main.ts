// The patient portal's frame: the SMART launch, who is signed in (the patient, or a family
// member acting on the patient's behalf as the patient's Consent allows), the navigation, and
// one live Subscription for the open view. Everything it shows comes through the FHIR API
// with the user's own token (`patient/` scopes): no private door.
import { Live, type LiveState } from "../shared/live.js";
import { type Client, connect, element, showError } from "../shared/smart.js";
import type { Me, View, ViewContext } from "./view.js";
import { careplan } from "./views/careplan.js";
import { consents } from "./views/consents.js";
import { documents } from "./views/documents.js";
import { messages } from "./views/messages.js";
import { preferences } from "./views/preferences.js";
import { visits } from "./views/visits.js";

// The one list of views, in navigation order.
const VIEWS: View[] = [visits, messages, careplan, documents, preferences, consents];

interface HumanName { text?: string; given?: string[]; family?: string }

function nameOf(names: HumanName[] | undefined): string | null {
  const name = names?.[0];
  if (!name) return null;
  return name.text ?? ([...(name.given ?? []), name.family ?? ""].join(" ").trim() || null);
}

async function whoAmI(client: Client): Promise<Me> {
  const patientId = client.getPatientId();
  if (!patientId) throw new Error("no patient in context");
  const patient = `Patient/${patientId}`;
  const user = client.getFhirUser() ?? patient;
  // The patient's name, if their record is shared with this user (a Consent may withhold it).
  const record = (await client.request(patient).catch(() => null)) as { name?: HumanName[] } | null;
  return { user, patient, patientName: nameOf(record?.name) ?? patient,
    onBehalf: user.startsWith("RelatedPerson/"), clientId: String(client.state.clientId ?? "") };
}

const LIVE_TEXT: Record<LiveState, string> = {
  connecting: "connecting to live updates…", live: "live", lost: "connection lost: retrying", closed: "",
};

class Frame {
  private live: Live | null = null;
  private current: View | null = null;
  private rendering: Promise<void> = Promise.resolve();
  private again = false;

  constructor(private readonly client: Client, private readonly me: Me, private readonly views: View[]) {}

  draw(): void {
    const user = document.getElementById("user") as HTMLElement;
    user.textContent = this.me.user;
    if (this.me.onBehalf) {
      (document.getElementById("behalf") as HTMLElement).replaceChildren(
        element("strong", {}, `Acting on behalf of ${this.me.patientName}`),
        ` (${this.me.patient}): you see what their Consent shares with you.`);
    }
    const nav = document.getElementById("views") as HTMLElement;
    nav.replaceChildren(...this.views.map((view) =>
      element("li", {}, element("a", { href: `#${view.id}`, "data-view": view.id }, view.title))));
    window.addEventListener("hashchange", () => { void this.open(location.hash.slice(1)); });
  }

  async open(id: string): Promise<void> {
    const view = this.views.find((v) => v.id === id) ?? this.views[0];
    if (view === this.current) return;
    this.current?.leave?.();
    const closing = this.live;
    this.live = null;
    void closing?.close();
    this.current = view;
    for (const link of document.querySelectorAll<HTMLAnchorElement>("#views a")) {
      if (link.dataset.view === view.id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const root = document.getElementById("content") as HTMLElement;
    root.replaceChildren();
    root.dataset.view = view.id;
    await this.refresh(view);
    if (view.live && this.current === view) {
      // A view's Subscription speaks only while it is the open one (a closing one says "closed").
      const live: Live = new Live(this.client, view.live(this.me), {
        changed: () => { if (this.live === live) void this.refresh(view); },
        state: (state, detail) => { if (this.live === live) this.showLive(state, detail); },
      });
      this.live = live;
      live.open().catch((error: unknown) => this.showLive("lost", error instanceof Error ? error.message : String(error)));
    } else {
      this.showLive("closed");
    }
  }

  /** Renders the view; a change arriving while it renders renders it once more after. */
  private refresh(view: View): Promise<void> {
    if (this.again) return this.rendering;
    this.again = true;
    this.rendering = this.rendering.then(async () => {
      this.again = false;
      if (this.current !== view) return;
      const status = document.getElementById("status") as HTMLElement;
      try {
        await view.render(this.context());
        status.removeAttribute("role");
        status.textContent = "ready";
      } catch (error) {
        showError(error);
      }
    });
    return this.rendering;
  }

  private context(): ViewContext {
    return {
      client: this.client, me: this.me, root: document.getElementById("content") as HTMLElement,
      fail: showError,
      say: (text) => { (document.getElementById("said") as HTMLElement).textContent = text; },
    };
  }

  private showLive(state: LiveState, detail?: string): void {
    const live = document.getElementById("live") as HTMLElement;
    live.dataset.state = state;
    live.textContent = state === "lost" && detail ? `${LIVE_TEXT.lost} (${detail})` : LIVE_TEXT[state];
    // A lost connection is said at once, not only shown.
    if (state === "lost") live.setAttribute("role", "alert");
    else live.removeAttribute("role");
  }
}

async function main(): Promise<void> {
  const client = await connect();
  const me = await whoAmI(client);
  const views = VIEWS.filter((v) => !(v.patientOnly && me.onBehalf));
  const frame = new Frame(client, me, views);
  frame.draw();
  await frame.open(location.hash.slice(1));
}

main().catch(showError);

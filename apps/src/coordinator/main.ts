// The coordinator dashboard's frame: signs in (SMART, `user/` scopes), learns who "me" is (the
// fhirUser, their roles, their CareTeams), draws the navigation with each view's count, and
// keeps ONE live Subscription for the open view (shared/live.ts): on every change it paints
// the view again and refreshes the counts. Each view is its own module in views/, registered
// in VIEWS below; everything goes through the FHIR API with the user's own token.
import { describe } from "../shared/fhir.js";
import { Live, type LiveState } from "../shared/live.js";
import { type Client, connect, count, element, resources, showError } from "../shared/smart.js";
import type { Me, View, ViewContext } from "./view.js";
import { gaps } from "./views/gaps.js";
import { glance } from "./views/glance.js";
import { handoffs } from "./views/handoffs.js";
import { mine } from "./views/mine.js";
import { patientView } from "./views/patient.js";
import { pool } from "./views/pool.js";
import { referrals } from "./views/referrals.js";
import { threads } from "./views/threads.js";
import { visits } from "./views/visits.js";

/** Every view, in the navigation's order. A new view: its module in views/, one line here. */
export const VIEWS: View[] = [mine, pool, handoffs, referrals, gaps, visits, patientView, threads, glance];

/** The view a URL names: `#patient/p1/Task/7` is the view `patient` (it reads the rest itself). */
function viewOf(hash: string): string {
  return hash.replace(/^#/, "").split("/")[0];
}

interface Role { id: string; code?: { coding?: { system?: string; code?: string }[] }[]; active?: boolean }

/** Who is signed in: the user, their active roles (and the roles' codes), and (when first
 * asked) their CareTeams. One search before the first paint: the worklists need the roles. */
async function whoAmI(client: Client): Promise<Me> {
  const user = client.getFhirUser() ?? "";
  if (!/^(Practitioner|PractitionerRole)\/[A-Za-z0-9.-]+$/.test(user)) {
    throw new Error(`the dashboard is for a Practitioner or PractitionerRole user, not ${user || "no fhirUser"}`);
  }
  const search = user.startsWith("Practitioner/")
    ? `PractitionerRole?practitioner=${user}&active=true&_count=50`
    : `PractitionerRole?_id=${user.split("/")[1]}&_count=1`;
  const roles = resources<Role>((await client.request(search)) as { entry?: { resource?: Role }[] });
  const refs = [user, ...roles.map((r) => `PractitionerRole/${r.id}`).filter((r) => r !== user)];
  const roleCodes = [...new Set(roles.flatMap((r) => (r.code ?? []).flatMap((c) => c.coding ?? [])
    .filter((c) => c.code).map((c) => (c.system ? `${c.system}|${c.code}` : (c.code as string)))))];
  let teams: Promise<string[]> | null = null;
  const careTeams = (): Promise<string[]> => {
    teams ??= client.request(
      `CareTeam?participant=${refs.map(encodeURIComponent).join(",")}&status=active&_elements=id&_count=100`)
      .then((bundle) => resources<{ id: string }>(bundle as { entry?: { resource?: { id: string } }[] })
        .map((t) => `CareTeam/${t.id}`));
    // A failed search is asked again next time, not kept.
    teams.catch(() => { teams = null; });
    return teams;
  };
  return { user, refs, roleCodes, careTeams };
}

const LIVE_TEXT: Record<LiveState, string> = {
  connecting: "connecting…", live: "live", lost: "connection lost — reconnecting", closed: "",
};

class Frame {
  private open: View | null = null;
  private live: Live | null = null;
  private painting: Promise<void> = Promise.resolve();
  private again = false;
  private countsTimer: number | undefined;
  private readonly base: ViewContext;
  private ctx: ViewContext; // the open view's (its own root)

  constructor(private readonly client: Client, me: Me) {
    this.base = {
      client, me,
      root: document.getElementById("view") as HTMLElement, // replaced per opening (show)
      // The view first, then the counts: they would share the server with its search.
      changed: () => { void this.repaint().then(() => { this.refreshCounts(); }); },
      fail: (error: unknown) => showError(new Error(describe(error))),
      open: (id: string) => { this.show(id).catch(showError); },
      count: (query: string) => count(client, query),
    };
    this.ctx = this.base;
  }

  navigation(): void {
    const nav = document.querySelector("nav ul") as HTMLElement;
    nav.replaceChildren(...VIEWS.map((view) => {
      // A view without a count (the patient view, the charts) gets no badge, not an empty one.
      const badge = view.count ? [" ", element("sl-badge", { pill: "", variant: "neutral", id: `count-${view.id}` }, "…")] : [];
      const link = element("a", { href: `#${view.id}`, "data-view": view.id }, view.title, ...badge);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        history.replaceState(null, "", `#${view.id}`);
        this.show(view.id).catch(showError);
      });
      return element("li", {}, link);
    }));
  }

  /** Opens a view: its Subscription replaces the previous view's (one per open view).
   * `painted` runs once the view has painted, before its Subscription is opened. */
  async show(id: string, again = false, painted?: () => void): Promise<void> {
    const view = VIEWS.find((v) => v.id === id) ?? VIEWS[0];
    if (this.open === view && !again) return; // `again`: the same view for another hash (another patient)
    this.open = view;
    for (const link of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
      if (link.dataset.view === view.id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const previous = this.live;
    this.live = null;
    void previous?.close();
    // A fresh element per opening: a paint of the previous view still under way lands in its
    // own (now detached) element, never over this one.
    const root = element("div", { class: "view-root" }, element("p", { class: "empty" }, "Loading…"));
    const main = document.getElementById("view") as HTMLElement;
    main.replaceChildren(root);
    main.dataset.view = view.id;
    const ctx: ViewContext = { ...this.base, root };
    this.ctx = ctx;
    await view.render(ctx);
    painted?.();
    if (view.live && this.open === view) {
      const live = new Live(this.client, view.live(this.ctx.me), {
        changed: () => { if (this.live === live) this.ctx.changed(); },
        state: (state, detail) => { if (this.live === live) liveState(state, detail); },
      });
      this.live = live;
      liveState("connecting");
      try {
        await live.open();
      } catch (error) {
        // No Subscription (e.g. a registration without the Subscription scope): the view still
        // works, and the header says it will not update by itself.
        if (this.live === live) liveState("lost", describe(error), "no live updates");
      }
    }
  }

  /** Paints the open view again; changes that arrive while it paints make one more paint.
   * Resolves once the paint that covers this change is done (failed ones are shown). */
  private repaint(): Promise<void> {
    if (!this.again) {
      this.again = true;
      this.painting = this.painting.then(async () => {
        this.again = false;
        if (this.open) await this.open.render(this.ctx);
      }).catch(showError);
    }
    return this.painting;
  }

  refreshCounts(): void {
    window.clearTimeout(this.countsTimer);
    this.countsTimer = window.setTimeout(() => { this.counts().catch(showError); }, 150);
  }

  async counts(): Promise<void> {
    await Promise.all(VIEWS.map(async (view) => {
      if (!view.count) return;
      const n = await view.count(this.ctx);
      const badge = document.getElementById(`count-${view.id}`) as HTMLElement;
      badge.textContent = String(n);
      badge.setAttribute("aria-label", `${n} in ${view.title}`);
      badge.setAttribute("variant", n ? "primary" : "neutral");
    }));
  }

  closeLive(): void {
    void this.live?.close();
    this.live = null;
  }
}

function liveState(state: LiveState, detail?: string, text?: string): void {
  const indicator = document.getElementById("live") as HTMLElement;
  indicator.textContent = text ?? LIVE_TEXT[state];
  indicator.dataset.state = state;
  indicator.title = detail ?? "";
}

async function main(): Promise<void> {
  const client = await connect();
  const me = await whoAmI(client);
  (document.getElementById("user") as HTMLElement).textContent = me.user;
  const frame = new Frame(client, me);
  frame.navigation();
  const first = VIEWS.find((v) => v.id === viewOf(location.hash)) ?? VIEWS[0];
  // A link inside a view (a patient, a thread, a timeline item) changes the hash.
  window.addEventListener("hashchange", () => { frame.show(viewOf(location.hash), true).catch(showError); });
  // The first view paints first: the counts (a search per view) would share the server with
  // its search and delay it; they start once it is on screen, beside its Subscription.
  let counting: Promise<void> = Promise.resolve();
  await frame.show(first.id, false, () => { counting = frame.counts(); });
  await counting;
  window.addEventListener("pagehide", () => frame.closeLive());
  (document.getElementById("status") as HTMLElement).textContent = "ready";
}

main().catch(showError);

// What a view of the dashboard is, and what the frame (main.ts) gives it. Each view is its own
// module in views/ and is registered in the one list in main.ts; the frame draws the
// navigation (with each view's count), opens one live Subscription for the open view, and
// calls `render` again whenever that Subscription reports a change.
import type { LiveSpec } from "../shared/live.js";
import type { Client } from "../shared/smart.js";

/** Who is signed in, as the worklists need it. */
export interface Me {
  /** The fhirUser: `Practitioner/x` or `PractitionerRole/x`. */
  user: string;
  /** The user and their active PractitionerRoles (a Practitioner's, or the role itself): who "me" is as an owner. */
  refs: string[];
  /** The codes of those roles, as `system|code` tokens (the pool's `performerType`). */
  roleCodes: string[];
  /** The CareTeams one of `refs` takes part in: asked for when a view first needs them (the
   * care gaps), not before the first worklist is painted; one search, kept. */
  careTeams: () => Promise<string[]>;
}

export interface ViewContext {
  client: Client;
  me: Me;
  /** The element the view draws into: a new one each time the view opens. Read it when
   * painting, never keep it. */
  root: HTMLElement;
  /** Tells the frame something changed through this view (an action): counts are refreshed. */
  changed: () => void;
  /** Shows a failure where the user looks (an OperationOutcome's text, say). */
  fail: (error: unknown) => void;
  /** Opens another view (e.g. a row's patient). */
  open: (viewId: string) => void;
  /** How many resources a search matches (`_summary=count`). */
  count: (query: string) => Promise<number>;
}

export interface View {
  /** Its id in the URL (`#mine`) and in the navigation (`a[data-view=mine]`). */
  id: string;
  title: string;
  /** The number in the navigation (a `_summary=count` search), if the view has one. */
  count?: (ctx: ViewContext) => Promise<number>;
  /** What its live Subscription listens to while it is open (one per open view). */
  live?: (me: Me) => LiveSpec;
  /** Queries and paints (again). Called when the view opens and on every live change; keeps
   * its own state (filter, sort, page) across calls. */
  render: (ctx: ViewContext) => Promise<void>;
}

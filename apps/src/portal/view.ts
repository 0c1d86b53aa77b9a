// What a view of the portal is, and what the frame (main.ts) gives it. Each view is its own
// module in views/, registered in the one list in main.ts; the frame draws the navigation,
// holds one live Subscription for the open view, and calls `render` again whenever that
// Subscription reports a change (or reconnects).
import type { LiveSpec } from "../shared/live.js";
import type { Client } from "../shared/smart.js";

/** Who is signed in, and for whom. */
export interface Me {
  /** The fhirUser: `Patient/x`, or `RelatedPerson/y` acting for the patient. */
  user: string;
  /** `Patient/x`: whose record the portal shows (the launch's patient context). */
  patient: string;
  /** The patient's name as their record gives it (or the reference, when it is not shared). */
  patientName: string;
  /** A family member (RelatedPerson) acting on the patient's behalf: sees what the patient's
   * Consent permits, changes neither the patient's preferences nor Consents. */
  onBehalf: boolean;
  /** This app's client_id: the `source` of its render cursors. */
  clientId: string;
}

export interface ViewContext {
  client: Client;
  me: Me;
  /** The element the view draws into (emptied when another view opens). */
  root: HTMLElement;
  /** Shows a failure where the user looks (an OperationOutcome's text, say). */
  fail: (error: unknown) => void;
  /** Says what an action did, in the polite live region. */
  say: (text: string) => void;
}

export interface View {
  /** Its id in the URL (`#visits`) and in the navigation (`a[data-view=visits]`). */
  id: string;
  title: string;
  /** Shown to the patient only (not to a family member acting for them). */
  patientOnly?: boolean;
  /** What its live Subscription listens to while it is open. */
  live?: (me: Me) => LiveSpec;
  /** Queries and paints (again); keeps its own state (an open thread, say) across calls. */
  render: (ctx: ViewContext) => Promise<void>;
  /** The view is closed (another opened): let go of what it holds. */
  leave?: () => void;
}

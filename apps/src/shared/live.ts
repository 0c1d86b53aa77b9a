// Live views: each open view holds ONE websocket Subscription of the Subscriptions Backport IG
// (a topic of this server, its filter criteria), created with the user's own token, so what
// arrives is decided by the same access decision as any other read.
//
// The cycle: create the Subscription (channel websocket, id-only payload, a heartbeat) →
// `$get-ws-binding-token` → open the socket it names → `bind-with-token <token> [last]` →
// `handshake`, then `event-notification` and `heartbeat` Bundles. Every event, and every
// (re)connect, calls the view's `changed`: the view re-queries what it shows (a notification
// says something changed; the search says what is there now). A socket that closes, or stays
// silent past two heartbeats, is a lost connection: shown to the user at once, then retried
// with back-off; the Subscription is deleted when the view closes.
import type { Client } from "./smart.js";

const BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
export const TOPIC = "http://fhir.care-coord.example/SubscriptionTopic/";

/** What a view listens to: a topic of this server (docs/subscriptions.md, "Topics") and the
 * filters it offers, ANDed (e.g. `Task?owner=Practitioner/x`). */
export interface LiveSpec {
  topic: string; // "task-status", or a full canonical
  filters: string[];
}

/** `connecting` until the first handshake; `live` while bound; `lost` from a closed or silent
 * socket until it is bound again; `closed` once the view let go. */
export type LiveState = "connecting" | "live" | "lost" | "closed";

export interface LiveOptions {
  /** Called on every event and after every (re)connect: re-query what the view shows. */
  changed: () => void;
  /** Called on every change of the connection's state (the frame shows it). */
  state?: (state: LiveState, detail?: string) => void;
  /** Seconds between the server's heartbeats (the silence that counts as lost is twice this). */
  heartbeat?: number;
}

interface Parameter { name: string; part?: Parameter[]; [value: string]: unknown }
interface NotificationBundle {
  resourceType?: string;
  entry?: { resource?: { resourceType?: string; parameter?: Parameter[] } }[];
}

/** The SubscriptionStatus at the head of a notification Bundle: its type and the highest event
 * number it accounts for. */
export function statusOf(message: NotificationBundle): { type: string; last: number } | null {
  const status = message.entry?.[0]?.resource;
  if (message.resourceType !== "Bundle" || status?.resourceType !== "Parameters") return null;
  const value = (p: Parameter | undefined): unknown =>
    p ? Object.entries(p).find(([k]) => k.startsWith("value"))?.[1] : undefined;
  const params = status.parameter ?? [];
  const type = String(value(params.find((p) => p.name === "type")) ?? "");
  let last = Number(value(params.find((p) => p.name === "events-since-subscription-start")) ?? 0);
  for (const p of params.filter((q) => q.name === "notification-event")) {
    last = Math.max(last, Number(value(p.part?.find((q) => q.name === "event-number")) ?? 0));
  }
  return { type, last: Number.isFinite(last) ? last : 0 };
}

function subscription(spec: LiveSpec, heartbeat: number): Record<string, unknown> {
  // A Subscription nobody deletes (the tab crashed) stops collecting after `end`.
  const end = new Date(Date.now() + 12 * 3600_000).toISOString();
  return {
    resourceType: "Subscription",
    meta: { profile: [`${BACKPORT}backport-subscription`] },
    status: "requested",
    reason: "A live view of the coordination apps",
    end,
    criteria: spec.topic.includes("://") ? spec.topic : TOPIC + spec.topic,
    // No filter: every event of the topic (an empty extension list is not valid FHIR).
    ...(spec.filters.length ? { _criteria: { extension: spec.filters.map((f) =>
      ({ url: `${BACKPORT}backport-filter-criteria`, valueString: f })) } } : {}),
    channel: {
      type: "websocket",
      payload: "application/fhir+json",
      _payload: { extension: [{ url: `${BACKPORT}backport-payload-content`, valueCode: "id-only" }] },
      extension: [{ url: `${BACKPORT}backport-heartbeat-period`, valueUnsignedInt: heartbeat }],
    },
  };
}

function parameter(params: { parameter?: Parameter[] }, name: string): string {
  const p = params.parameter?.find((q) => q.name === name);
  const v = p ? Object.entries(p).find(([k]) => k.startsWith("value"))?.[1] : undefined;
  if (typeof v !== "string") throw new Error(`$get-ws-binding-token answered no ${name}`);
  return v;
}

/** One live Subscription for one open view. `close()` when the view closes. */
export class Live {
  private subscriptionId: string | null = null;
  private socket: WebSocket | null = null;
  private token: { token: string; url: string; expires: number } | null = null;
  private last: number | null = null; // the last event number seen (a reconnect binds after it)
  private closed = false;
  private retries = 0;
  // The server refused to bind or deliver (e.g. the Subscription's grant lapsed with the
  // token it was created under): the next attempt makes a new Subscription under the
  // app's current token instead of binding the old one again.
  private renew = false;
  private watchdog: number | undefined;
  private retryTimer: number | undefined;
  private readonly heartbeat: number;
  current: LiveState = "connecting";

  constructor(private readonly client: Client, private readonly spec: LiveSpec,
              private readonly options: LiveOptions) {
    this.heartbeat = options.heartbeat ?? 20;
  }

  /** Creates the Subscription and connects; resolves once the first bind is sent (the view
   * should already have painted: the handshake makes it query once more). */
  async open(): Promise<void> {
    const created = (await this.client.create(subscription(this.spec, this.heartbeat) as never)) as { id?: string };
    if (!created.id) throw new Error("the server created no Subscription");
    this.subscriptionId = created.id;
    if (this.closed) { await this.remove(); return; }
    await this.connect();
  }

  /** A new Subscription in place of the old one, created under the app's current token (the
   * view re-queries on the handshake, so nothing missed meanwhile stays unseen). */
  private async renewed(): Promise<void> {
    const created = (await this.client.create(subscription(this.spec, this.heartbeat) as never)) as { id?: string };
    if (!created.id) throw new Error("the server created no Subscription");
    await this.remove(); // the old one (best effort)
    this.subscriptionId = created.id;
    this.token = null;
    this.last = null; // a new Subscription numbers its events from 1
    this.renew = false;
  }

  /** Lets go: the socket closes and the Subscription is deleted (best effort). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    window.clearTimeout(this.watchdog);
    window.clearTimeout(this.retryTimer);
    this.socket?.close(1000, "view closed");
    this.socket = null;
    this.setState("closed");
    await this.remove();
  }

  private async remove(): Promise<void> {
    const id = this.subscriptionId;
    this.subscriptionId = null;
    // keepalive: the DELETE still goes out when the page is being left (pagehide).
    if (id) await this.client.request({ url: `Subscription/${id}`, method: "DELETE", keepalive: true }).catch(() => undefined);
  }

  private setState(state: LiveState, detail?: string): void {
    this.current = state;
    this.options.state?.(state, detail);
  }

  private async binding(): Promise<{ token: string; url: string }> {
    // A token binds until its expiration (one hour): ask again a minute before.
    if (this.token && this.token.expires - Date.now() > 60_000) return this.token;
    const answer = (await this.client.request(
      `Subscription/${this.subscriptionId}/$get-ws-binding-token`)) as { parameter?: Parameter[] };
    const expires = Date.parse(parameter(answer, "expiration"));
    this.token = { token: parameter(answer, "token"), url: parameter(answer, "websocket-url"),
      expires: Number.isFinite(expires) ? expires : Date.now() + 600_000 };
    return this.token;
  }

  private async connect(): Promise<void> {
    if (this.closed || !this.subscriptionId) return;
    let binding: { token: string; url: string };
    try {
      if (this.renew) await this.renewed();
      binding = await this.binding();
    } catch (error) {
      this.renew = true;
      this.lost(error instanceof Error ? error.message : String(error));
      return;
    }
    const socket = new WebSocket(binding.url);
    this.socket = socket;
    socket.onopen = () => {
      socket.send(`bind-with-token ${binding.token}${this.last === null ? "" : ` ${this.last}`}`);
      this.arm();
    };
    socket.onmessage = (event: MessageEvent<string>) => {
      if (socket !== this.socket) return;
      this.arm();
      if (typeof event.data === "string" && event.data.startsWith("error")) {
        this.token = null; // e.g. an expired token: the next attempt asks for a new one
        this.renew = true; // and a lapsed grant: a new Subscription under the current token
        socket.close(4000, event.data);
        return;
      }
      let status: { type: string; last: number } | null = null;
      try {
        status = statusOf(JSON.parse(event.data) as NotificationBundle);
      } catch {
        return;
      }
      if (!status) return;
      if (status.type === "handshake") {
        this.retries = 0;
        this.last = Math.max(this.last ?? 0, status.last);
        this.setState("live");
        this.options.changed(); // (re)connected: what the view shows may be stale
      } else if (status.type === "event-notification") {
        this.last = Math.max(this.last ?? 0, status.last);
        this.options.changed();
      }
    };
    socket.onclose = (event: CloseEvent) => {
      if (socket !== this.socket || this.closed) return;
      this.lost(event.reason || `connection closed (${event.code})`);
    };
  }

  /** No message for two heartbeats: the connection is as good as lost. */
  private arm(): void {
    window.clearTimeout(this.watchdog);
    this.watchdog = window.setTimeout(() => {
      const socket = this.socket;
      if (socket) { this.socket = null; socket.close(4001, "silent"); }
      this.lost("no heartbeat");
    }, this.heartbeat * 2000 + 1000);
  }

  private lost(detail: string): void {
    if (this.closed) return;
    window.clearTimeout(this.watchdog);
    this.socket = null;
    this.setState("lost", detail);
    const delay = Math.min(30_000, 500 * 2 ** this.retries++) * (0.75 + Math.random() / 2);
    window.clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => { this.connect().catch((e) => this.lost(String(e))); }, delay);
  }
}

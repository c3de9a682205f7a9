// coatcheck.js: the browser side of coatcheck's header transport.
//
// One ES module, no build step, no dependency. It keeps the session token the server hands
// out in the `Session-Token` response header, attaches it as `Authorization: Bearer <token>`
// to requests for the page's own origin (and origins you allow explicitly, never others),
// follows rotations, forgets the token when the session ends, and keeps the tabs of one
// origin in step. The token may be an opaque session ID or a signed/encrypted token: the
// client never looks inside it.
//
// Origins. Only allowed origins (the page's own and `allowedOrigins`) receive the token,
// and only their answers may set or clear it: an answer is judged by where it finally came
// from, after redirects, since an open redirect on an allowed origin can end a request on
// any other one, whose token would make the page act as the attacker's account (session
// swap), and whose empty token or 401 would log the user out. URLs resolve as fetch and
// XMLHttpRequest resolve them, against the document's base URL, so an injected
// `<base href>` cannot make the client judge one origin while the request goes to another.
//
//   import { createClient } from "/coatcheck.js";
//   const session = createClient();
//   session.addEventListener("logout", () => showLogin());
//   const response = await session.fetch("/api/cart");
//
// Concurrency. Writes are serialised: each request with an unsafe method (anything but
// GET, HEAD and OPTIONS) takes an exclusive lock, so it waits for the requests in flight
// and carries the token the previous write returned. This matters most for client-side
// sessions, where the whole session is in the token and every write answers with a whole
// new one: two writes sent with the same token would each return a token holding only
// their own change, and the client would keep one of them. Login, logout and
// `regenerate()` are writes too, so two token-replacing requests never overlap and none
// overlaps a request still carrying the old token. While the client holds no token, every
// request (any method) is exclusive: it may create the session. Reads (GET, HEAD, OPTIONS)
// take a shared lock and run in parallel. `exclusive: true` makes a read exclusive (a GET
// that replaces the token); `exclusive: false` lets a write run beside others (and, in
// client-side mode, lose to them). The lock is a Web Lock where the browser has them
// (shared by every tab of the origin), an in-page queue otherwise. Server-initiated
// rotations (periodic renewal) are not known in advance; for them, a response only updates
// the token if no newer token arrived since its request was sent, and the server's grace
// window keeps the older token valid for requests already in flight. Writes made outside
// `session.fetch` (with `attach`/`accept`, or by other code) take no lock: in client-side
// mode, only one of several such writes made at once keeps its change.

/**
 * @typedef {"memory" | "session" | "local"} StorageKind
 * "memory": the token lives in this page only and is gone on reload (other open tabs hand
 * it back); "session": `sessionStorage`, survives reloads of this tab; "local":
 * `localStorage`, survives closing the browser, and so does a token stolen by XSS.
 */

/**
 * @typedef {object} ClientOptions
 * @property {StorageKind} [storage] where the token is kept (default "memory")
 * @property {string[]} [allowedOrigins] other origins that get the token, e.g.
 *   "https://api.example.com" (default: the page's own origin only)
 * @property {string} [header] request header carrying the token (default "Authorization")
 * @property {string | null} [scheme] its scheme; null sends the bare token (default "Bearer")
 * @property {string} [responseHeader] response header with a new token (default "Session-Token")
 * @property {string} [name] names the storage key, lock and tab channel (default "coatcheck")
 * @property {number} [syncTimeout] ms a new tab without a token waits for an open tab to
 *   hand over its token before the first request (default 50; 0 disables)
 * @property {typeof fetch} [fetch] the fetch to wrap (default `globalThis.fetch`)
 * @property {string} [expiryHeader] response header with the seconds the session has left
 *   (default "Session-Expires"; the server sends it with `Header(expiry_header=...)`)
 * @property {number} [warnBefore] ms before the session expires to fire "expiring"
 *   (default 60000)
 * @property {string} [extendUrl] where `extend()` posts (default "/session/extend", served
 *   by `coatcheck.adapters.asgi.ExtendSession`, or any route that touches the session)
 */

/**
 * @typedef {RequestInit & { exclusive?: boolean }} SessionRequestInit
 * An exclusive request waits for requests in flight and holds later ones back until its
 * answer is stored. Unset, a request is exclusive if its method is unsafe (not GET, HEAD or
 * OPTIONS: it may replace the token, and in client-side mode it does), or while the client
 * holds no token (it may create the session). `exclusive: true` makes a read that replaces
 * the token exclusive too; `exclusive: false` lets a request run in parallel: public reads
 * before there is a session, or writes that can afford to lose (in client-side mode, each
 * of several parallel writes returns a token without the others' changes).
 */

/**
 * @typedef {object} ResponseLike
 * A fetch `Response`, an axios response, or a plain object with these properties.
 * @property {number} status
 * @property {Headers | Record<string, string | undefined>} headers (axios: lower-case names)
 * @property {string} [url] where the answer came from, after redirects (fetch's
 *   `Response.url`; for XMLHttpRequest, its `responseURL`)
 * @property {{ responseURL?: string }} [request] the XMLHttpRequest behind an axios response,
 *   whose `responseURL` is used when `url` is missing
 * @property {string} [type] fetch's response type: "opaque" and "opaqueredirect" answers
 *   carry nothing readable and are ignored
 */

/**
 * @typedef {RequestInfo | URL} Destination
 * A request's URL: a string (relative ones resolve against the document's base URL, as
 * fetch and XMLHttpRequest resolve them), a `URL`, or a fetch `Request` (its `url`).
 */

const STORAGE = { session: "sessionStorage", local: "localStorage" };
/** Methods that do not write (RFC 9110, 9.2.1): their requests share the lock. */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * @typedef {object} ReauthenticateDetail
 * The `detail` of a `reauthenticate` event: what a route asked of the login (RFC 9470).
 * @property {"login_required" | "login_too_old" | "assurance_too_low" | string} reason
 * @property {number | null} maxAge the route's `max_age`, seconds (null: none)
 * @property {string[]} acrValues the assurance levels that satisfy it, lowest first
 * @property {string} url the URL of the refused request (after redirects)
 */

/**
 * A client for one coatcheck session. Events: `login` (a token arrived where there was
 * none), `logout` (the session ended: empty token header, another tab, or `forget()`),
 * `expired` (the server answered 401 to the token, or the time the server said the session
 * had left ran out: the token is forgotten), `expiring` (`warnBefore` ms before that; call
 * `extend()` to keep the session), `change` (any new token), and `reauthenticate` (a
 * `CustomEvent`: the route needs a more recent login or a higher assurance level; `detail`
 * is a `ReauthenticateDetail`). A `reauthenticate` 401 keeps the token: the session is
 * alive, the page prompts for the password or second factor and retries. It is told by its
 * `WWW-Authenticate: ... error="insufficient_user_authentication"` challenge, which a
 * cross-origin API must expose (`Access-Control-Expose-Headers`) as it exposes
 * `Session-Token`.
 *
 * Time left. When the server sends the expiry header (seconds the session has left unless
 * another request refreshes it: the earlier of its idle and absolute deadlines), the client
 * keeps `expiresAt` (ms, by this page's clock: seconds, not a date, so a skewed clock does
 * not matter) and schedules the two events; every answer carrying the header reschedules
 * them. The server's verdict stays authoritative: the events are a courtesy to the user.
 */
export class SessionClient extends EventTarget {
  /** @type {string | null} */ #token = null;
  #generation = 0;
  /** @type {Storage | null} */ #store = null;
  /** @type {BroadcastChannel | null} */ #channel = null;
  /** @type {Set<string>} */ #origins;
  #header;
  #scheme;
  #responseHeader;
  #key;
  #lockName;
  #locks;
  #fetch;
  #expiryHeader;
  #warnBefore;
  #extendUrl;
  /** @type {number | null} */ #expiresAt = null;
  /** @type {ReturnType<typeof setTimeout>[]} */ #timers = [];
  /** Resolves once the client is ready for its first request (see `syncTimeout`). */
  ready;

  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    super();
    const storage = options.storage ?? "memory";
    if (storage !== "memory" && !Object.hasOwn(STORAGE, storage)) {
      throw new TypeError(`storage must be "memory", "session" or "local", not ${storage}`);
    }
    const name = options.name ?? "coatcheck";
    this.#header = options.header ?? "Authorization";
    this.#scheme = options.scheme === undefined ? "Bearer" : options.scheme;
    this.#responseHeader = options.responseHeader ?? "Session-Token";
    this.#key = `${name}.token`;
    this.#lockName = `${name}.rotation`;
    this.#origins = new Set((options.allowedOrigins ?? []).map((o) => new URL(o).origin));
    this.#origins.add(globalThis.location.origin);
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#expiryHeader = options.expiryHeader ?? "Session-Expires";
    this.#warnBefore = options.warnBefore ?? 60000;
    this.#extendUrl = options.extendUrl ?? "/session/extend";
    this.#locks = globalThis.navigator?.locks ?? localLocks();
    if (storage !== "memory") {
      this.#store = /** @type {Storage} */ (globalThis[STORAGE[storage]]);
      this.#token = this.#store.getItem(this.#key) || null;
    }
    this.ready = Promise.resolve();
    if (typeof BroadcastChannel === "function") {
      this.#channel = new BroadcastChannel(name);
      this.#channel.onmessage = (event) => this.#onMessage(event.data);
      const timeout = options.syncTimeout ?? 50;
      if (this.#token === null && timeout > 0) {
        this.ready = new Promise((resolve) => {
          const done = () => { this.removeEventListener("change", done); resolve(); };
          this.addEventListener("change", done);
          setTimeout(done, timeout);
        });
        this.#channel.postMessage({ type: "hello" });
      }
    }
  }

  /** Whether the client holds a token (the token itself is never exposed as a property). */
  get hasToken() {
    return this.#token !== null;
  }

  /**
   * When the session expires unless refreshed (ms since the epoch, this page's clock), as
   * the last answer with the expiry header said; null if none said it or the session ended.
   * @returns {number | null}
   */
  get expiresAt() {
    return this.#expiresAt;
  }

  /**
   * Ms the session has left (0 once expired), or null if unknown.
   * @returns {number | null}
   */
  remaining() {
    return this.#expiresAt === null ? null : Math.max(0, this.#expiresAt - Date.now());
  }

  /**
   * Keep the session alive: a POST to `extendUrl`, which records a request on the server
   * and answers with the new time left. Resolves with the Response.
   * @returns {Promise<Response>}
   */
  extend() {
    return this.fetch(this.#extendUrl, { method: "POST" });
  }

  /**
   * `fetch`, with the session token attached when the URL's origin is allowed, and the
   * response's token changes applied before the promise resolves.
   * @param {RequestInfo | URL} input
   * @param {SessionRequestInit} [init]
   * @returns {Promise<Response>}
   */
  async fetch(input, init = {}) {
    const { exclusive, ...rest } = init;
    const request = new Request(input, rest);
    if (!this.allows(request.url)) return this.#fetch(request);
    await this.ready;
    const writes = !SAFE_METHODS.has(request.method.toUpperCase());
    const mode = (exclusive ?? (writes || this.#token === null)) ? "exclusive" : "shared";
    return this.#locks.request(this.#lockName, { mode }, async () => {
      const ticket = this.attach(request.headers, request.url);
      const response = await this.#fetch(request);
      // A redirect may have ended the request on another origin: judge the answer by its
      // final URL. A `fetch` option may return a Response it built, without a URL; that one
      // came from the request's own URL unless it says it was redirected.
      const url = response.url || (response.redirected ? "" : request.url);
      if (url && !isOpaque(response)) this.#apply(response, ticket, url);
      return response;
    });
  }

  /**
   * Whether requests to `url` may carry the token, and answers from it change the token:
   * same origin as the page, or listed in `allowedOrigins`. Compares whole origins
   * (scheme, host and port), never prefixes. Relative URLs resolve as fetch does.
   * @param {Destination} url
   */
  allows(url) {
    return this.#origins.has(resolve(url).origin);
  }

  /**
   * The headers to add to a request for `url` (for clients other than `fetch`): the token,
   * or, without one, `Session-Transport: header` so a new session is handed out in the
   * response header rather than a cookie. Empty for origins that are not allowed.
   * @param {Destination} [url] defaults to the page's own address (not its base URL)
   * @returns {Record<string, string>}
   */
  headers(url = globalThis.location.href) {
    if (!this.allows(url)) return {};
    if (this.#token === null) return { "Session-Transport": "header" };
    const value = this.#scheme === null ? this.#token : `${this.#scheme} ${this.#token}`;
    return { [this.#header]: value };
  }

  /**
   * Add `headers(url)` to `headers` (a `Headers` object or a plain object, as axios takes)
   * and return a ticket for `accept`. `url` is required: without the destination, the
   * token could go anywhere the request is sent.
   * @param {Headers | Record<string, string>} headers
   * @param {Destination} url the URL the request goes to
   * @returns {number}
   */
  attach(headers, url) {
    if (url === undefined || url === null) {
      throw new TypeError(
        "attach(headers, url) needs the URL the request goes to, so that only " +
          "allowed origins get the token: pass it, session.attach(headers, url)",
      );
    }
    for (const [name, value] of Object.entries(this.headers(url))) {
      if (headers instanceof Headers) headers.set(name, value);
      else headers[name] = value;
    }
    return this.#generation;
  }

  /**
   * Apply a response: store a new token, forget it on an empty token header or a 401.
   * Pass the ticket `attach` returned: a response to a request that was sent before the
   * token last changed is ignored, so a late answer never overwrites a newer token.
   * Answers whose final URL (after redirects) is not on an allowed origin are ignored too,
   * as are opaque ones; one that does not tell its URL is an error.
   * @param {ResponseLike} response
   * @param {number} [ticket]
   */
  accept(response, ticket = this.#generation) {
    if (isOpaque(response)) return;
    const url = response.url || response.request?.responseURL;
    if (!url) {
      throw new TypeError(
        "accept(response) needs the URL the response came from, after redirects, to " +
          "ignore other origins: pass a fetch Response or an axios response, or add " +
          "`url` (XMLHttpRequest: its responseURL) to the object",
      );
    }
    this.#apply(response, ticket, url);
  }

  /**
   * @param {ResponseLike} response
   * @param {number} ticket
   * @param {string} url the final URL of the response
   */
  #apply(response, ticket, url) {
    if (!this.allows(url)) return;
    const stepUp = response.status === 401 ? readStepUp(response.headers, url) : null;
    if (stepUp !== null) {
      // The session is alive but not enough for the route: keep the token (and follow a
      // new one, as on any answer), and tell the page to re-authenticate.
      if (ticket === this.#generation) this.#follow(response);
      this.dispatchEvent(new CustomEvent("reauthenticate", { detail: stepUp }));
      return;
    }
    if (ticket !== this.#generation) return;
    if (response.status === 401 && this.#token !== null) {
      this.#set(null, "expired");
      return;
    }
    this.#follow(response);
  }

  /**
   * Apply the token header of a response: store a new token, forget it when empty.
   * @param {ResponseLike} response
   */
  #follow(response) {
    const value = readHeader(response.headers, this.#responseHeader);
    if (value === "") {
      if (this.#token !== null) this.#set(null, "logout");
    } else if (value !== null && value !== this.#token) {
      this.#set(value, this.#token === null ? "login" : null);
    }
    const left = readHeader(response.headers, this.#expiryHeader);
    if (left !== null && /^\d+$/.test(left) && this.#token !== null) {
      this.#schedule(Date.now() + Number(left) * 1000);
    }
  }

  /**
   * Fire "expiring" `warnBefore` ms before `at`, and "expired" at `at` (forgetting the
   * token), replacing what was scheduled before.
   * @param {number | null} at
   */
  #schedule(at) {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers = [];
    this.#expiresAt = at;
    if (at === null) return;
    const left = at - Date.now();
    this.#timers.push(
      setTimeout(() => this.dispatchEvent(new Event("expiring")), Math.max(0, left - this.#warnBefore)),
      setTimeout(() => { if (this.#token !== null) this.#set(null, "expired"); }, Math.max(0, left)),
    );
  }

  /** Forget the token in this tab and every other (does not tell the server). */
  forget() {
    if (this.#token !== null) this.#set(null, "logout");
  }

  /** Stop listening to other tabs, and the expiry timers. */
  close() {
    this.#schedule(null);
    this.#channel?.close();
    this.#channel = null;
  }

  /**
   * @param {string | null} token
   * @param {"login" | "logout" | "expired" | null} event
   * @param {boolean} [broadcast]
   */
  #set(token, event, broadcast = true) {
    this.#token = token;
    if (token === null) this.#schedule(null);
    this.#generation += 1;
    if (this.#store !== null) {
      if (token === null) this.#store.removeItem(this.#key);
      else this.#store.setItem(this.#key, token);
    }
    if (broadcast) this.#channel?.postMessage({ type: "token", token });
    if (event !== null) this.dispatchEvent(new Event(event));
    this.dispatchEvent(new Event("change"));
  }

  /** @param {{ type: string, token?: string | null }} message */
  #onMessage(message) {
    const token = typeof message.token === "string" && message.token ? message.token : null;
    if (message.type === "hello" && this.#token !== null) {
      this.#channel?.postMessage({ type: "welcome", token: this.#token });
    } else if (message.type === "welcome" && this.#token === null && token !== null) {
      this.#set(token, "login", false); // ignored when late: this tab has its own session by then
    } else if (message.type === "token" && token !== this.#token) {
      this.#set(token, token === null ? "logout" : this.#token === null ? "login" : null, false);
    }
  }

}

/**
 * A client for the page's coatcheck session.
 * @param {ClientOptions} [options]
 */
export function createClient(options) {
  return new SessionClient(options);
}

/**
 * `url` as an absolute URL, resolved as fetch and XMLHttpRequest resolve it: against the
 * document's base URL (which a `<base href>` sets), or, without a document (workers),
 * against the location. A `Request` goes by its `url` (checked by shape, not `instanceof`,
 * so that one from another frame is not read as the string "[object Request]").
 * @param {Destination} url
 * @returns {URL}
 */
function resolve(url) {
  const href = typeof url === "object" && url !== null && "url" in url ? url.url : url;
  const base = globalThis.document?.baseURI ?? globalThis.location.href;
  return new URL(/** @type {string | URL} */ (href), base);
}

/**
 * The step-up challenge of a 401 (RFC 9470: `error="insufficient_user_authentication"`,
 * with `error_description`, `max_age` and `acr_values`), or null if it has none.
 * @param {Headers | Record<string, string | undefined>} headers
 * @param {string} url
 * @returns {ReauthenticateDetail | null}
 */
function readStepUp(headers, url) {
  const challenge = readHeader(headers, "WWW-Authenticate");
  if (challenge === null) return null;
  /** @type {Record<string, string>} */
  const params = {};
  for (const [, name, value] of challenge.matchAll(/([A-Za-z_]+)="([^"]*)"/g)) {
    params[name.toLowerCase()] = value;
  }
  if (params.error !== "insufficient_user_authentication") return null;
  const maxAge = params.max_age === undefined ? NaN : Number(params.max_age);
  return {
    reason: params.error_description ?? "login_required",
    maxAge: Number.isFinite(maxAge) ? maxAge : null,
    acrValues: (params.acr_values ?? "").split(" ").filter((v) => v !== ""),
    url,
  };
}

/**
 * Whether fetch hid the answer from script: a `no-cors` answer from another origin, or a
 * redirect not followed (`redirect: "manual"`). Neither has readable headers or status, and
 * an opaque redirect reports the request's URL, not where it pointed.
 * @param {ResponseLike} response
 */
function isOpaque(response) {
  return response.type === "opaque" || response.type === "opaqueredirect";
}

/**
 * @param {Headers | Record<string, string | undefined>} headers
 * @param {string} name
 * @returns {string | null}
 */
function readHeader(headers, name) {
  if (typeof headers.get === "function") return /** @type {Headers} */ (headers).get(name);
  const record = /** @type {Record<string, string | undefined>} */ (headers);
  return record[name.toLowerCase()] ?? record[name] ?? null;
}

/**
 * A readers-writer lock for browsers without Web Locks (older Safari, insecure contexts),
 * with the `navigator.locks.request` signature; it serialises this page only.
 * @returns {{ request<T>(name: string, options: { mode: "shared" | "exclusive" }, fn: () => Promise<T>): Promise<T> }}
 */
function localLocks() {
  let everything = Promise.resolve(); // settles when every request queued so far has
  let exclusive = Promise.resolve(); // settles when the last exclusive request has
  return {
    request(_name, { mode }, fn) {
      const after = mode === "exclusive" ? everything : exclusive;
      const run = after.then(() => fn());
      const settled = run.then(() => undefined, () => undefined);
      if (mode === "exclusive") {
        everything = exclusive = settled;
      } else {
        everything = Promise.all([everything, settled]).then(() => undefined);
      }
      return run;
    },
  };
}

/**
 * `webgrab`: fetch a URL with HTTP/1.1 GET through a namespace's /net (so
 * after mounting a remote /net the request leaves from the remote), follow
 * redirects, and save the body under the URL's last path element, as
 * Inferno's webgrab does. `https:` runs TLS (verified against the system's
 * CAs) over the same tunnelled stream.
 *
 * @example
 * ```ts ignore
 * const r = await httpGet(ns, "http://10.77.0.4:8080/ip");
 * console.log(r.status, new TextDecoder().decode(r.body));
 * ```
 *
 * @module
 */

import { concatBytes } from "../bytes.ts";
import type { Conn } from "../transport/conn.ts";
import type { OpenFile } from "../fs/tree.ts";
import { Ename, OTRUNC, OWRITE } from "../styx/types.ts";
import { dial, type NetNamespace, type NsDialOptions } from "./nsdial.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A response after redirects. */
export interface HttpResponse {
  /** The URL that answered (after redirects). */
  url: string;
  /** Status code, e.g. 200. */
  status: number;
  /** Reason phrase, e.g. "OK". */
  reason: string;
  /** Header fields, names lower-cased; repeated fields joined with ", ". */
  headers: Map<string, string>;
  /** The body, de-chunked. */
  body: Uint8Array;
  /** Every URL visited, first to last. */
  chain: string[];
}

/** Options for {@link httpGet}. */
export interface HttpGetOptions extends NsDialOptions {
  /** Redirects followed before giving up (default 10). */
  maxRedirects?: number;
  /** Extra request header fields. */
  headers?: Record<string, string>;
  /** Largest body accepted, in bytes (default 1 GiB). */
  maxBody?: number;
  /** For https: CA certificates (PEM) to trust instead of the system's. */
  ca?: string;
}

/** Buffered reading from a Conn. */
class Reader {
  #buf = new Uint8Array(0);
  #eof = false;
  constructor(private conn: Conn) {}

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    const b = await this.conn.read();
    if (b === null) {
      this.#eof = true;
      return false;
    }
    const n = new Uint8Array(this.#buf.length + b.length);
    n.set(this.#buf);
    n.set(b, this.#buf.length);
    this.#buf = n;
    return true;
  }

  /** One line without its CRLF; null at end of stream. */
  async line(limit = 64 * 1024): Promise<string | null> {
    for (;;) {
      const i = this.#buf.indexOf(10);
      if (i >= 0) {
        const line = dec.decode(this.#buf.subarray(0, i)).replace(/\r$/, "");
        this.#buf = this.#buf.subarray(i + 1);
        return line;
      }
      if (this.#buf.length > limit) throw new Error(`HTTP line longer than ${limit} bytes`);
      if (!(await this.#fill())) {
        if (this.#buf.length === 0) return null;
        const line = dec.decode(this.#buf);
        this.#buf = new Uint8Array(0);
        return line;
      }
    }
  }

  /** Exactly `n` bytes; throws if the stream ends first. */
  async exactly(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) {
      if (!(await this.#fill())) {
        throw new Error(`the body ended after ${this.#buf.length} of ${n} bytes`);
      }
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Everything up to end of stream. */
  async rest(max: number): Promise<Uint8Array> {
    while (await this.#fill()) {
      if (this.#buf.length > max) throw new Error(`the body is larger than ${max} bytes`);
    }
    const out = this.#buf;
    this.#buf = new Uint8Array(0);
    return out;
  }
}

async function tlsOver(conn: Conn, servername: string, ca?: string): Promise<Conn> {
  const tls = await import("node:tls");
  const { connDuplex } = await import("../transport/tls.ts");
  const sock = tls.connect({
    socket: connDuplex(conn),
    servername,
    ...(ca !== undefined ? { ca } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    sock.once("secureConnect", () => resolve());
    sock.once("error", reject);
  });
  let done = false;
  let wake: (() => void) | null = null;
  const chunks: Uint8Array[] = [];
  sock.on("data", (b: Uint8Array) => {
    chunks.push(new Uint8Array(b));
    wake?.();
  });
  const end = () => {
    done = true;
    wake?.();
  };
  sock.on("end", end);
  sock.on("close", end);
  sock.on("error", end);
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  return {
    peer: conn.peer,
    local: conn.local,
    closed,
    async read() {
      while (chunks.length === 0 && !done) {
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
      return chunks.shift() ?? null;
    },
    write(data) {
      return new Promise((resolve, reject) => sock.write(data, (e) => (e ? reject(e) : resolve())));
    },
    close() {
      sock.destroy();
      conn.close();
      resolveClosed();
    },
  };
}

async function getOnce(
  ns: NetNamespace,
  url: URL,
  opts: HttpGetOptions,
): Promise<Omit<HttpResponse, "chain">> {
  const secure = url.protocol === "https:";
  const port = url.port !== "" ? url.port : secure ? "443" : "80";
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  let conn = await dial(ns, `tcp!${host}!${port}`, opts);
  try {
    if (secure) conn = await tlsOver(conn, host, opts.ca);
    const fields: Record<string, string> = {
      Host: url.host,
      "User-Agent": "ferry-webgrab/1",
      Accept: "*/*",
      Connection: "close",
      ...opts.headers,
    };
    let req = `GET ${url.pathname}${url.search} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(fields)) {
      if (/[\r\n]/.test(k + v)) throw new Error(`bad header field '${k}'`);
      req += `${k}: ${v}\r\n`;
    }
    await conn.write(enc.encode(req + "\r\n"));
    const r = new Reader(conn);
    const status = await r.line();
    const m = status === null ? null : /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(status);
    if (!m) throw new Error(`'${url}' did not answer with HTTP (got '${status ?? ""}')`);
    const headers = new Map<string, string>();
    for (;;) {
      const line = await r.line();
      if (line === null || line === "") break;
      const c = line.indexOf(":");
      if (c <= 0) throw new Error(`malformed header line '${line}' from '${url}'`);
      const k = line.slice(0, c).trim().toLowerCase();
      const v = line.slice(c + 1).trim();
      headers.set(k, headers.has(k) ? `${headers.get(k)}, ${v}` : v);
    }
    const max = opts.maxBody ?? 1024 ** 3;
    let body: Uint8Array;
    const te = headers.get("transfer-encoding")?.toLowerCase() ?? "";
    const cl = headers.get("content-length");
    if (te.includes("chunked")) {
      const parts: Uint8Array[] = [];
      let total = 0;
      for (;;) {
        const sizeLine = await r.line();
        if (sizeLine === null) throw new Error(`chunked body from '${url}' ended early`);
        const size = parseInt(sizeLine.split(";")[0]!.trim(), 16);
        if (!Number.isFinite(size) || size < 0) throw new Error(`bad chunk size '${sizeLine}'`);
        if (size === 0) {
          for (;;) {
            const trailer = await r.line();
            if (trailer === null || trailer === "") break;
          }
          break;
        }
        total += size;
        if (total > max) throw new Error(`the body is larger than ${max} bytes`);
        parts.push(await r.exactly(size));
        await r.line();
      }
      body = concatBytes(parts);
    } else if (cl !== undefined) {
      const n = Number(cl);
      if (!/^[0-9]+$/.test(cl) || n > max) throw new Error(`bad Content-Length '${cl}'`);
      body = await r.exactly(n);
    } else {
      body = await r.rest(max);
    }
    return { url: url.href, status: Number(m[1]), reason: m[2] ?? "", headers, body };
  } finally {
    conn.close();
  }
}

/**
 * GET `url` (http: or https:) through the namespace's /net, following up
 * to `maxRedirects` redirects. Throws an Error naming the URL on failure;
 * any status (404 included) is returned, not thrown.
 */
export async function httpGet(
  ns: NetNamespace,
  url: string,
  opts: HttpGetOptions = {},
): Promise<HttpResponse> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`bad URL '${url}'`);
  }
  const chain: string[] = [];
  const max = opts.maxRedirects ?? 10;
  for (;;) {
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new Error(`cannot fetch '${u.href}': only http and https URLs are supported`);
    }
    chain.push(u.href);
    const r = await getOnce(ns, u, opts);
    const loc = r.headers.get("location");
    if ([301, 302, 303, 307, 308].includes(r.status) && loc !== undefined) {
      if (chain.length > max) {
        throw new Error(`too many redirects (more than ${max}) from '${url}'`);
      }
      u = new URL(loc, u);
      continue;
    }
    return { ...r, chain };
  }
}

/**
 * The file name webgrab saves `url` under: its last path element, or
 * "index.html" when the path ends in "/".
 *
 * @example
 * ```ts
 * import { fileNameFor } from "./webgrab.ts";
 * if (fileNameFor("http://h/n09230945.asp?x=1") !== "n09230945.asp") throw new Error();
 * if (fileNameFor("http://h/") !== "index.html") throw new Error();
 * ```
 */
export function fileNameFor(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`bad URL '${url}'`);
  }
  const last = decodeURIComponent(u.pathname.split("/").at(-1) ?? "");
  if (last === "" || last === "." || last === ".." || last.includes("\0")) return "index.html";
  return last;
}

/** What {@link webgrab} needs of a namespace: opening and creating files. */
export interface GrabNamespace extends NetNamespace {
  /** Create `path` with 9P `perm` and open it with `mode`. */
  create(path: string, perm: number, mode: number): Promise<OpenFile>;
}

/** Replace the contents of `path` in `ns` with `data`, creating the file when needed. */
export async function saveFile(ns: GrabNamespace, path: string, data: Uint8Array): Promise<void> {
  let f: OpenFile;
  try {
    f = await ns.open(path, OWRITE | OTRUNC);
  } catch (e) {
    if (!(e instanceof Error) || e.message !== Ename.notFound) throw e;
    f = await ns.create(path, 0o666, OWRITE);
  }
  try {
    const size = f.iounit > 0 ? f.iounit : 64 * 1024;
    let done = 0;
    while (done < data.length) {
      const n = await f.write(BigInt(done), data.subarray(done, done + size));
      if (n <= 0) throw new Error(`writing '${path}' made no progress`);
      done += n;
    }
  } finally {
    await f.close();
  }
}

/** Options for {@link webgrab}. */
export interface WebgrabOptions extends HttpGetOptions {
  /** Directory (a namespace path) to save into (default "/"). */
  dir?: string;
  /** Save under this name instead of the URL's last element. */
  output?: string;
}

/**
 * Fetch `url` and save its body in the namespace, under the URL's last path
 * element (as given, before any redirect) in `opts.dir`. Returns where it was saved and the response. A
 * status other than 2xx is an error naming the URL and status, and saves
 * nothing.
 */
export async function webgrab(
  ns: GrabNamespace,
  url: string,
  opts: WebgrabOptions = {},
): Promise<{ path: string; response: HttpResponse }> {
  const r = await httpGet(ns, url, opts);
  if (r.status < 200 || r.status > 299) {
    throw new Error(`'${r.url}': HTTP ${r.status} ${r.reason}`.trimEnd());
  }
  const name = opts.output ?? fileNameFor(url);
  const dir = opts.dir ?? "/";
  const path = name.startsWith("/") ? name : `${dir.replace(/\/$/, "")}/${name}`;
  await saveFile(ns, path, r.body);
  return { path, response: r };
}

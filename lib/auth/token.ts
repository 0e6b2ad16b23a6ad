/**
 * Enrolment tokens: `ferry1.` followed by base64url JSON
 * `{ n: name, e: expiry (Unix seconds), s: secret (base64url, 32 bytes), f: CA SHA-256 hex,
 * a: [extra DNS names or IP addresses] }` (`a` only when there are any).
 * The CA keeps only the SHA-256 of the secret and the names together (see
 * {@link tokenId}), so a token whose names were altered is not one the CA
 * made; the fingerprint lets the enrolling device pin the CA before
 * trusting anything a signer says.
 *
 * @module
 */

/** A decoded token. */
export interface Token {
  name: string;
  expires: Date;
  secret: string;
  /** SHA-256 of the CA certificate (hex). */
  fingerprint: string;
  /** Extra DNS names and IP addresses the certificate will carry, as the CA chose them. */
  sans: string[];
}

const PREFIX = "ferry1.";

function b64url(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64url(s: string): Uint8Array {
  const t = s.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(t + "=".repeat((4 - (t.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Make a token string (granting the extra names `sans`) and return it with its secret. */
export function makeToken(
  name: string,
  expires: Date,
  fingerprint: string,
  sans: string[] = [],
): { token: string; secret: string } {
  const secret = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const body = JSON.stringify({
    n: name,
    e: Math.floor(expires.getTime() / 1000),
    s: secret,
    f: fingerprint,
    ...(sans.length > 0 ? { a: sans } : {}),
  });
  return { token: PREFIX + b64url(new TextEncoder().encode(body)), secret };
}

/**
 * Decode a token, with a clear error for anything malformed.
 *
 * @example
 * ```ts
 * import { makeToken, parseToken } from "./token.ts";
 * const { token } = makeToken("pi", new Date(Date.now() + 60e3), "ab".repeat(32));
 * if (parseToken(token).name !== "pi" || parseToken(token).sans.length) throw new Error("bad decode");
 * ```
 */
export function parseToken(token: string): Token {
  const bad = new Error(
    "Malformed enrolment token: copy it exactly as 'ferry ca token' printed it",
  );
  if (!token.startsWith(PREFIX)) throw bad;
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(new TextDecoder().decode(unb64url(token.slice(PREFIX.length))));
  } catch {
    throw bad;
  }
  if (
    typeof o.n !== "string" || typeof o.e !== "number" || typeof o.s !== "string" ||
    typeof o.f !== "string" || !/^[0-9a-f]{64}$/.test(o.f) ||
    (o.a !== undefined && (!Array.isArray(o.a) || !o.a.every((x) => typeof x === "string")))
  ) throw bad;
  return {
    name: o.n,
    expires: new Date(o.e * 1000),
    secret: o.s,
    fingerprint: o.f,
    sans: (o.a as string[] | undefined) ?? [],
  };
}

/**
 * The id under which the CA records a token: SHA-256 hex of its secret,
 * followed (when the token grants extra names) by a newline and the names,
 * one per line. Changing the names in a token changes its id, so the CA
 * does not know it: only names the CA put in a token are ever granted.
 */
export async function tokenId(secret: string, sans: string[] = []): Promise<string> {
  const text = sans.length > 0 ? `${secret}\n${sans.join("\n")}` : secret;
  const h = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
  );
  return [...h].map((x) => x.toString(16).padStart(2, "0")).join("");
}

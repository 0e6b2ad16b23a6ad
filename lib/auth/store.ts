/**
 * The CA's record of what it issued, what it revoked and which enrolment
 * tokens it handed out, in an embedded SQLite database (DIR/ca.db).
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import type { CertKind } from "./certs.ts";
import { ensureSecretFileSync } from "./keys.ts";

/** One issued certificate as recorded. */
export interface IssuedRecord {
  serial: string;
  name: string;
  kind: CertKind;
  groups: string[];
  notBefore: Date;
  notAfter: Date;
  issuedAt: Date;
  /** Set once revoked. */
  revokedAt?: Date;
  /** How it was issued: "issue", "enroll" or "renew". */
  via: string;
}

/** What a redeemed token grants. */
export interface TokenGrant {
  name: string;
  kind: CertKind;
  groups: string[];
  ttlMs: number;
}

const SCHEMA = `
create table if not exists certs (
  serial text primary key,
  name text not null,
  kind text not null,
  groups text not null,
  not_before integer not null,
  not_after integer not null,
  issued_at integer not null,
  revoked_at integer,
  via text not null
);
create index if not exists certs_name on certs(name);
create table if not exists tokens (
  id text primary key,
  name text not null,
  kind text not null,
  groups text not null,
  cert_ttl_ms integer not null,
  expires integer not null,
  created_at integer not null,
  used_at integer
);
`;

type Row = Record<string, unknown>;

function toRecord(r: Row): IssuedRecord {
  const rec: IssuedRecord = {
    serial: String(r.serial),
    name: String(r.name),
    kind: r.kind === "node" ? "node" : "user",
    groups: JSON.parse(String(r.groups)) as string[],
    notBefore: new Date(Number(r.not_before)),
    notAfter: new Date(Number(r.not_after)),
    issuedAt: new Date(Number(r.issued_at)),
    via: String(r.via),
  };
  if (r.revoked_at !== null && r.revoked_at !== undefined) {
    rec.revokedAt = new Date(Number(r.revoked_at));
  }
  return rec;
}

/**
 * The CA database.
 *
 * @example
 * ```ts
 * import { CaStore } from "./store.ts";
 * const db = new CaStore(":memory:");
 * db.addCert({ serial: "1a", name: "alice", kind: "user", groups: [], notBefore: new Date(),
 *   notAfter: new Date(Date.now() + 1000), issuedAt: new Date(), via: "issue" });
 * if (db.list().length !== 1) throw new Error("not recorded");
 * db.close();
 * ```
 */
export class CaStore {
  readonly db: DatabaseSync;
  /**
   * An exclusive lock (flock on `PATH.lock`) held around every statement.
   * The signer and `ferry ca` commands are separate processes writing one
   * database; without it the signer was seen failing with SQLite's "disk
   * I/O error" while a `ferry ca token` ran beside it.
   */
  readonly #lock: Deno.FsFile | null;

  /**
   * Open (creating if needed) the database at `path`. It holds token hashes,
   * so the file is made (or tightened to) 0600 before SQLite opens it; SQLite
   * gives its journal the same mode.
   */
  constructor(path: string) {
    if (path !== ":memory:") ensureSecretFileSync(path);
    this.#lock = path === ":memory:"
      ? null
      : Deno.openSync(`${path}.lock`, { create: true, write: true, mode: 0o600 });
    this.db = new DatabaseSync(path);
    this.db.exec("pragma busy_timeout = 5000");
    this.#locked(() => this.db.exec(SCHEMA));
  }

  /** Run `f` holding the database's lock. */
  #locked<T>(f: () => T): T {
    this.#lock?.lockSync(true);
    try {
      return f();
    } finally {
      this.#lock?.unlockSync();
    }
  }

  /** Record an issued certificate. */
  addCert(r: IssuedRecord): void {
    return this.#locked(() => {
      this.db.prepare(
        "insert into certs (serial, name, kind, groups, not_before, not_after, issued_at, via) values (?, ?, ?, ?, ?, ?, ?, ?)",
      ).run(
        r.serial,
        r.name,
        r.kind,
        JSON.stringify(r.groups),
        r.notBefore.getTime(),
        r.notAfter.getTime(),
        r.issuedAt.getTime(),
        r.via,
      );
    });
  }

  /** Every issued certificate, oldest first. */
  list(): IssuedRecord[] {
    return this.#locked(() => {
      return (this.db.prepare("select * from certs order by issued_at, serial").all() as Row[])
        .map(toRecord);
    });
  }

  /** The record for `serial`, if any. */
  get(serial: string): IssuedRecord | undefined {
    return this.#locked(() => {
      const r = this.db.prepare("select * from certs where serial = ?").get(serial) as
        | Row
        | undefined;
      return r ? toRecord(r) : undefined;
    });
  }

  /**
   * Revoke by serial or by name (every certificate of that name). Returns the
   * serials newly revoked; an unknown name or serial throws.
   */
  revoke(nameOrSerial: string, now: Date): string[] {
    return this.#locked(() => {
      const rows = this.db.prepare("select * from certs where serial = ? or name = ?")
        .all(nameOrSerial.toLowerCase(), nameOrSerial) as Row[];
      if (rows.length === 0) {
        throw new Error(`No certificate with name or serial '${nameOrSerial}'`);
      }
      const out: string[] = [];
      for (const r of rows.map(toRecord)) {
        if (r.revokedAt) continue;
        this.db.prepare("update certs set revoked_at = ? where serial = ?").run(
          now.getTime(),
          r.serial,
        );
        out.push(r.serial);
      }
      return out;
    });
  }

  /** Revoked serials with their revocation dates. */
  revoked(): { serial: string; date: Date }[] {
    return this.#locked(() => {
      return (this.db.prepare(
        "select serial, revoked_at from certs where revoked_at is not null order by revoked_at",
      ).all() as Row[]).map((r) => ({
        serial: String(r.serial),
        date: new Date(Number(r.revoked_at)),
      }));
    });
  }

  /** Record a new enrolment token by the SHA-256 of its secret. */
  addToken(id: string, g: TokenGrant, expires: Date, now: Date): void {
    return this.#locked(() => {
      this.db.prepare(
        "insert into tokens (id, name, kind, groups, cert_ttl_ms, expires, created_at) values (?, ?, ?, ?, ?, ?, ?)",
      ).run(
        id,
        g.name,
        g.kind,
        JSON.stringify(g.groups),
        g.ttlMs,
        expires.getTime(),
        now.getTime(),
      );
    });
  }

  /**
   * Use up a token: succeeds once, only before it expires, only for the name
   * it was made for. Throws a clear error otherwise.
   */
  redeemToken(id: string, name: string, now: Date): TokenGrant {
    return this.#locked(() => {
      const r = this.db.prepare("select * from tokens where id = ?").get(id) as Row | undefined;
      if (!r) throw new Error("Unknown enrolment token");
      if (r.name !== name) throw new Error(`Token is for '${String(r.name)}', not '${name}'`);
      if (r.used_at !== null && r.used_at !== undefined) {
        throw new Error("Enrolment token was already used");
      }
      if (Number(r.expires) <= now.getTime()) throw new Error("Enrolment token has expired");
      const res = this.db.prepare("update tokens set used_at = ? where id = ? and used_at is null")
        .run(now.getTime(), id);
      if (Number(res.changes) !== 1) throw new Error("Enrolment token was already used");
      return {
        name: String(r.name),
        kind: r.kind === "node" ? "node" : "user",
        groups: JSON.parse(String(r.groups)) as string[],
        ttlMs: Number(r.cert_ttl_ms),
      };
    });
  }

  /** Close the database. */
  close(): void {
    this.db.close();
    this.#lock?.close();
  }
}

/**
 * `ferry ca`: the certificate authority. Subcommands init, issue, list,
 * revoke, crl and token.
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import {
  CertificateAuthority,
  DEFAULT_CERT_TTL_MS,
  DEFAULT_TOKEN_TTL_MS,
  writeCredentials,
} from "../lib/auth/ca.ts";
import { type CertKind, checkName, parseDuration } from "../lib/auth/certs.ts";
import { askPassphrase, encryptKeyPem, pemBlocks } from "../lib/auth/keys.ts";
import { defaultCertsDir } from "../lib/auth/link.ts";

const USAGE = "ferry ca init|issue|list|revoke|crl|token|sign [options] [NAME|SERIAL|FILE]";

const ABOUT =
  `Run Ferry's certificate authority. Credentials live in DIR (--dir; default $FERRY_CERTS, else ~/.ferry/certs).

  ferry ca init NAME [--force]            make the CA key (DIR/ca.key, 0600) and certificate (DIR/ca.pem)
  ferry ca issue NAME [--user|--node] [--san DNS-or-IP]... [--manifest FILE] [--group G]...
                [--ttl 24h] [--encrypt] [--force]
                                          issue DIR/NAME.key and DIR/NAME.pem
  ferry ca list                           list issued certificates
  ferry ca revoke NAME|SERIAL             revoke and rewrite DIR/crl.pem
  ferry ca crl [--der]                    (re)write DIR/crl.pem (and DIR/crl.der)
  ferry ca token NAME [--ttl 10m] [--user|--node] [--group G]... [--cert-ttl 24h]
                [--san DNS-or-IP]... [--manifest FILE]
                                          print a single-use enrolment token for 'ferry enroll';
                                          the certificate carries the --san names, and with
                                          --manifest the host of node NAME's address too
  ferry ca sign [--verify] FILE           sign a manifest with the CA's key under the next serial (FILE.sig)`;

const OPTIONS = `  --dir DIR        credentials directory
  --force          replace an existing CA key or issued key
  --user, --node   kind of certificate (issue: default user; token: default node)
  --san NAME       extra DNS name or IP address (repeatable); the CA decides, not the device
  --manifest FILE  also give the host of node NAME's address in cluster manifest FILE
  --group G        group membership (repeatable)
  --ttl DURATION   lifetime (issue: default 24h; token: default 10m), e.g. 90s, 10m, 24h, 30d
  --cert-ttl D     lifetime of the certificate an enrolment token yields (default 24h)
  --encrypt        encrypt the issued key with a passphrase ($FERRY_PASSPHRASE or prompt)
  --der            also write the CRL in DER form`;

function kindOf(v: Record<string, unknown>, dflt: CertKind): CertKind {
  if (v.user && v.node) throw new UsageError("give only one of --user and --node");
  return v.node ? "node" : v.user ? "user" : dflt;
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : [];
}

function one(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected ${what}\nusage: ${USAGE}`);
  return positionals[0]!;
}

/**
 * The host part of node `name`'s address in the manifest `file`, for its
 * certificate; undefined (with a note) when the address names no host.
 */
async function manifestHost(file: string, name: string): Promise<string | undefined> {
  const { load } = await import("../lib/manifest/load.ts");
  const { parseDialString } = await import("../lib/net/dial.ts");
  const m = await load(file);
  const node = m.nodes.get(name);
  if (!node) {
    throw new Error(
      `'${name}' is not a node of '${file}' (its nodes: ${
        [...m.nodes.keys()].join(", ") || "none"
      })`,
    );
  }
  const host = parseDialString(node.address, { net: "tcp", service: "styx" }).host;
  if (["*", "0.0.0.0", "::", "[::]", ""].includes(host)) {
    console.error(
      `ferry ca: node '${name}' listens on '${node.address}', which names no host: give --san`,
    );
    return undefined;
  }
  return host.replace(/^\[(.*)\]$/, "$1");
}

/** Run `ferry ca ARGS`. */
export async function run(args: string[]): Promise<number> {
  let ca: CertificateAuthority | undefined;
  // `ferry ca sign FILE` is `ferry sign FILE`: it has options of its own.
  if (args[0] === "sign") return await (await import("./ca_sign.ts")).run(args.slice(1));
  try {
    const p = parse({
      usage: USAGE,
      about: ABOUT,
      optionsHelp: OPTIONS,
      options: {
        dir: { type: "string" },
        force: { type: "boolean" },
        user: { type: "boolean" },
        node: { type: "boolean" },
        san: { type: "string", multiple: true },
        group: { type: "string", multiple: true },
        ttl: { type: "string" },
        "cert-ttl": { type: "string" },
        encrypt: { type: "boolean" },
        der: { type: "boolean" },
        manifest: { type: "string" },
      },
    }, args);
    if (p.help) return 0;
    const v = p.values;
    const dir = typeof v.dir === "string" ? v.dir : defaultCertsDir();
    const [sub, ...rest] = p.positionals;
    switch (sub) {
      case "init": {
        const name = one(rest, "the CA's NAME");
        ca = await CertificateAuthority.init(dir, name, { force: v.force === true });
        console.log(`created CA '${name}' in '${dir}'`);
        console.log(`fingerprint sha256:${await ca.fingerprint()}`);
        return 0;
      }
      case "issue": {
        const name = one(rest, "the NAME to issue a certificate for");
        checkName(name);
        const kind = kindOf(v, "user");
        const ttlMs = typeof v.ttl === "string" ? parseDuration(v.ttl) : DEFAULT_CERT_TTL_MS;
        if (v.force !== true) {
          try {
            await Deno.lstat(`${dir}/${name}.key`);
            throw new Error(`'${dir}/${name}.key' already exists: use --force to replace it`);
          } catch (e) {
            if (!(e instanceof Deno.errors.NotFound)) throw e;
          }
        }
        const sans = strings(v.san);
        if (typeof v.manifest === "string") {
          const host = await manifestHost(v.manifest, name);
          if (host !== undefined && !sans.includes(host)) sans.push(host);
        }
        ca = await CertificateAuthority.open(dir);
        const r = await ca.issue(name, { kind, ttlMs, groups: strings(v.group), sans });
        let keyPem = r.keyPem;
        if (v.encrypt === true) {
          keyPem = await encryptKeyPem(keyPem, askPassphrase(`'${dir}/${name}.key'`));
        }
        await writeCredentials(dir, name, r.certPem, keyPem, { force: true });
        console.log(`issued ${kind} certificate for '${name}' serial ${r.serial}`);
        console.log(`wrote '${dir}/${name}.pem' and '${dir}/${name}.key'`);
        return 0;
      }
      case "list": {
        if (rest.length) throw new UsageError(`'ca list' takes no arguments\nusage: ${USAGE}`);
        ca = await CertificateAuthority.open(dir);
        const now = Date.now();
        const rows = ca.list();
        console.log(
          "SERIAL                            NAME             KIND  STATUS   EXPIRES               GROUPS",
        );
        for (const r of rows) {
          const status = r.revokedAt ? "revoked" : r.notAfter.getTime() < now ? "expired" : "valid";
          console.log(
            [
              r.serial.padEnd(33),
              r.name.padEnd(16),
              r.kind.padEnd(5),
              status.padEnd(8),
              r.notAfter.toISOString().replace(/\.\d+Z$/, "Z").padEnd(21),
              r.groups.join(","),
            ].join(" "),
          );
        }
        return 0;
      }
      case "revoke": {
        const what = one(rest, "a NAME or SERIAL to revoke");
        ca = await CertificateAuthority.open(dir);
        const serials = await ca.revoke(what);
        if (serials.length === 0) console.log(`'${what}' was already revoked`);
        for (const s of serials) console.log(`revoked ${s}`);
        console.log(`wrote '${dir}/crl.pem'`);
        return 0;
      }
      case "crl": {
        if (rest.length) throw new UsageError(`'ca crl' takes no arguments\nusage: ${USAGE}`);
        ca = await CertificateAuthority.open(dir);
        const path = await ca.writeCrl();
        console.log(`wrote '${path}'`);
        if (v.der === true) {
          const der = pemBlocks(await Deno.readTextFile(path), "X509 CRL")[0]!;
          await Deno.writeFile(`${dir}/crl.der`, der, { mode: 0o644 });
          console.log(`wrote '${dir}/crl.der'`);
        }
        return 0;
      }
      case "token": {
        const name = one(rest, "the NAME the token is for");
        const sans = strings(v.san);
        if (typeof v.manifest === "string") {
          const host = await manifestHost(v.manifest, name);
          if (host !== undefined && !sans.includes(host)) sans.push(host);
        }
        ca = await CertificateAuthority.open(dir);
        const token = await ca.token(name, {
          sans,
          ttlMs: typeof v.ttl === "string" ? parseDuration(v.ttl) : DEFAULT_TOKEN_TTL_MS,
          kind: kindOf(v, "node"),
          groups: strings(v.group),
          certTtlMs: typeof v["cert-ttl"] === "string"
            ? parseDuration(v["cert-ttl"])
            : DEFAULT_CERT_TTL_MS,
        });
        console.log(token);
        return 0;
      }
      case undefined:
        throw new UsageError(`missing subcommand\nusage: ${USAGE}`);
      default:
        throw new UsageError(`unknown subcommand 'ca ${sub}'\nusage: ${USAGE}`);
    }
  } catch (e) {
    return fail("ferry ca", e);
  } finally {
    ca?.close();
  }
}

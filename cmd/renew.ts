/**
 * `ferry renew [--daemon]`: renew this end's certificate with the signer.
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import { fetchCrl, renew, renewalTime } from "../lib/auth/enroll.ts";
import { identityOf, parseCert, parseDuration } from "../lib/auth/certs.ts";
import { defaultCertsDir, loadCredentials } from "../lib/auth/link.ts";
import { parseDialString } from "../lib/net/dial.ts";

const USAGE = "ferry renew [--dir DIR] [--name NAME] [--daemon] [--crl-every 60s] [ADDR]";

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, Math.max(0, ms));
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

/** Run `ferry renew`. */
export async function run(args: string[]): Promise<number> {
  try {
    const p = parse({
      usage: USAGE,
      about:
        `Renew this end's certificate: prove possession of the current one to the signer at ADDR (default: the address saved in DIR/signer by 'ferry enroll') over TLS, and store a new key and certificate. With --daemon, keep running: renew at two thirds of each certificate's lifetime (with jitter) and refresh DIR/crl.pem every --crl-every, so listeners pick up revocations.`,
      optionsHelp:
        `  --dir DIR          credentials directory (default $FERRY_CERTS, else ~/.ferry/certs)
  --name NAME        which credentials in DIR (default: the only ones, or $FERRY_NAME)
  --daemon           keep renewing
  --crl-every D      how often the daemon refreshes the CRL (default 60s)`,
      options: {
        dir: { type: "string" },
        name: { type: "string" },
        daemon: { type: "boolean" },
        "crl-every": { type: "string" },
      },
    }, args);
    if (p.help) return 0;
    if (p.positionals.length > 1) throw new UsageError(`too many arguments\nusage: ${USAGE}`);
    const dir = typeof p.values.dir === "string" ? p.values.dir : defaultCertsDir();
    let addr = p.positionals[0];
    if (addr === undefined) {
      try {
        addr = (await Deno.readTextFile(`${dir}/signer`)).trim();
      } catch {
        throw new UsageError(`no ADDR given and no '${dir}/signer' saved by 'ferry enroll'`);
      }
    }
    const a = parseDialString(addr, { net: "tcp", service: "6670" });
    const name = typeof p.values.name === "string" ? p.values.name : undefined;
    const once = async () => {
      const r = await renew(a.host, a.port, dir, name);
      console.log(
        `renewed '${r.name}': serial ${r.oldSerial} -> ${r.serial}, valid until ${r.notAfter.toISOString()}`,
      );
    };
    if (p.values.daemon !== true) {
      await once();
      return 0;
    }
    const crlEvery = parseDuration(
      typeof p.values["crl-every"] === "string" ? p.values["crl-every"] : "60s",
    );
    const ac = new AbortController();
    try {
      Deno.addSignalListener("SIGINT", () => ac.abort());
      Deno.addSignalListener("SIGTERM", () => ac.abort());
    } catch { /* signals unsupported here */ }
    let nextCrl = 0;
    let earliest = 0; // never renew twice within a tenth of a lifetime
    while (!ac.signal.aborted) {
      const creds = await loadCredentials(dir, name);
      const id = identityOf(parseCert(creds.cert));
      const life = id.notAfter.getTime() - id.notBefore.getTime();
      const due = Math.max(renewalTime(id.notBefore, id.notAfter).getTime(), earliest);
      const now = Date.now();
      if (now >= due) {
        try {
          await once();
          earliest = Date.now() + Math.max(1000, life / 10);
          continue;
        } catch (e) {
          console.error(`ferry renew: ${(e as Error).message}`);
          const left = id.notAfter.getTime() - now;
          await sleep(Math.min(60_000, Math.max(5_000, left / 10)), ac.signal);
          continue;
        }
      }
      if (now >= nextCrl) {
        await fetchCrl(a.host, a.port, dir).catch((e: Error) =>
          console.error(`ferry renew: cannot refresh the CRL: ${e.message}`)
        );
        nextCrl = now + crlEvery;
      }
      await sleep(Math.min(due, nextCrl) - Date.now(), ac.signal);
    }
    return 0;
  } catch (e) {
    return fail("ferry renew", e);
  }
}

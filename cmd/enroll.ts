/**
 * `ferry enroll ADDR TOKEN`: get this device's first certificate.
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import { enroll } from "../lib/auth/enroll.ts";
import { askPassphrase, encryptKeyPem } from "../lib/auth/keys.ts";
import { defaultCertsDir } from "../lib/auth/link.ts";
import { parseDialString } from "../lib/net/dial.ts";

const USAGE =
  "ferry enroll [--dir DIR] [--force] [--encrypt] [--san NAME-OR-ADDRESS]... ADDR TOKEN";

/** Run `ferry enroll`. */
export async function run(args: string[]): Promise<number> {
  try {
    const p = parse({
      usage: USAGE,
      about:
        `Enrol this device with the signer at ADDR using a token from 'ferry ca token NAME'. The key is made here and never leaves this machine; the signer must belong to the CA whose fingerprint the token carries. Stores DIR/NAME.key, DIR/NAME.pem, DIR/ca.pem, DIR/crl.pem and DIR/signer.`,
      optionsHelp:
        `  --dir DIR   where to store credentials (default $FERRY_CERTS, else ~/.ferry/certs)
  --force     replace existing credentials for the token's name
  --encrypt   encrypt the key with a passphrase ($FERRY_PASSPHRASE or prompt)
  --san NAME  ask for an extra DNS name or IP address in the certificate (repeatable);
              only names the token grants are given, and a missing one is reported`,
      options: {
        dir: { type: "string" },
        force: { type: "boolean" },
        encrypt: { type: "boolean" },
        san: { type: "string", multiple: true },
      },
    }, args);
    if (p.help) return 0;
    if (p.positionals.length !== 2) {
      throw new UsageError(`expected ADDR and TOKEN\nusage: ${USAGE}`);
    }
    const [addr, token] = p.positionals as [string, string];
    const a = parseDialString(addr, { net: "tcp", service: "6670" });
    const dir = typeof p.values.dir === "string" ? p.values.dir : defaultCertsDir();
    const r = await enroll(a.host, a.port, token.trim(), dir, {
      force: p.values.force === true,
      encryptKey: p.values.encrypt === true
        ? (pem) => encryptKeyPem(pem, askPassphrase("the new key"))
        : undefined,
      sans: (p.values.san as string[] | undefined) ?? [],
    });
    const names = r.sans.length > 0 ? ` for ${r.sans.map((n) => `'${n}'`).join(", ")}` : "";
    console.log(
      `enrolled ${r.kind} '${r.name}' serial ${r.serial}${names}; credentials in '${r.dir}'`,
    );
    for (const n of r.notGranted) {
      console.error(
        `ferry enroll: warning: the certificate does not carry '${n}' (the token does not grant it), so '${r.name}' cannot be dialled as '${n}': ask the CA for a token made with --san ${n}`,
      );
    }
    return 0;
  } catch (e) {
    return fail("ferry enroll", e);
  }
}

/**
 * `ferry sign FILE` (also meant for `ferry ca sign FILE`): sign a manifest
 * with the CA's key, writing FILE.sig, and publish it to the signer serving
 * the CA directory; `--verify` checks a signature.
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import { defaultCertsDir } from "../lib/auth/link.ts";
import { readSigned, signFile } from "../lib/manifest/sign.ts";
import { publishManifest } from "../lib/cluster/state.ts";

const spec = {
  usage: "ferry sign [--dir CADIR] [--verify | --no-publish] FILE",
  about: "Sign the manifest FILE with the CA's Ed25519 key (CADIR/ca.key), writing FILE.sig.\n" +
    "Each signature carries the next serial number (kept in CADIR/manifest.serial).\n" +
    "Nodes started with 'ferry up' refuse a manifest whose signature is missing or does\n" +
    "not match, and one whose serial is lower than a serial they have already applied.\n" +
    "The signed manifest is published in CADIR/published: the signer serving CADIR\n" +
    "serves it at once to every node that joined with 'ferry up --join'.\n" +
    "With --verify, check FILE against FILE.sig and CADIR/ca.pem instead.",
  options: {
    dir: { type: "string" as const },
    verify: { type: "boolean" as const },
    "no-publish": { type: "boolean" as const },
  },
  optionsHelp: "  --dir DIR     the CA's directory (default $FERRY_CERTS, else ~/.ferry/certs)\n" +
    "  --verify      check the signature instead of making one\n" +
    "  --no-publish  only write FILE.sig; the signer keeps serving what it serves",
};

/** Run `ferry sign`. */
export async function run(args: string[]): Promise<number> {
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    if (p.positionals.length !== 1) {
      throw new UsageError(`expected one manifest FILE\nusage: ${spec.usage}`);
    }
    const file = p.positionals[0]!;
    const dir = typeof p.values.dir === "string" ? p.values.dir : defaultCertsDir();
    if (p.values.verify === true) {
      if (p.values["no-publish"] === true) {
        throw new UsageError(`--verify publishes nothing: drop --no-publish\nusage: ${spec.usage}`);
      }
      const s = await readSigned(file, await Deno.readTextFile(`${dir}/ca.pem`));
      console.log(`${file}: signature good, serial ${s.serial}`);
      return 0;
    }
    const out = await signFile(file, dir);
    console.log(`wrote '${out.path}' (serial ${out.serial})`);
    if (p.values["no-publish"] !== true) {
      await publishManifest(dir, file);
      console.log(`published serial ${out.serial}`);
    }
    return 0;
  } catch (e) {
    return fail("ferry sign", e);
  }
}

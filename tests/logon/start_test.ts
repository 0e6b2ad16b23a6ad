/**
 * What a one-shot `ferry logon` or `ferry cpu` loads before it can dial and
 * compose: not node:tls (a dial uses Deno's TLS, and node:tls only to fall
 * back on it), not the host tree with node:fs (loaded when a standard
 * namespace is made), not the X.509 library. Each costs a one-shot
 * command a large part of its start; these are the modules each start
 * imports before anything else happens.
 */
import assert from "node:assert/strict";

interface Dep {
  code?: { specifier?: string };
  isDynamic?: boolean;
}
interface Info {
  roots: string[];
  modules: { specifier: string; dependencies?: Dep[] }[];
}

/** Every module `entry` loads with its static imports (`deno info`). */
async function staticGraph(entry: string): Promise<Set<string>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: new URL("../..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as Info;
  const mods = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const walk = (s: string) => {
    if (seen.has(s)) return;
    seen.add(s);
    for (const d of mods.get(s)?.dependencies ?? []) {
      if (!d.isDynamic && d.code?.specifier) walk(d.code.specifier);
    }
  };
  walk(info.roots[0]!);
  return seen;
}

const HEAVY = [/^node:tls$/, /^node:fs$/, /@peculiar\/x509/, /reflect-metadata/];

for (
  const entry of [
    "cmd/logon.ts",
    // What `ferry cpu` imports at once, beside cmd/cpu.ts.
    "lib/manifest/apply.ts",
    "lib/manifest/check.ts",
    "lib/auth/link.ts",
    "lib/cpu/client.ts",
  ]
) {
  Deno.test(`${entry} starts without node:tls, node:fs or the X.509 library`, async () => {
    const loaded = [...await staticGraph(entry)];
    for (const re of HEAVY) {
      assert.deepEqual(loaded.filter((s) => re.test(s)), [], `${entry} loads ${re}`);
    }
  });
}

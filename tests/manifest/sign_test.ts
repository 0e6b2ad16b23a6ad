import assert from "node:assert/strict";
import { CertificateAuthority } from "../../lib/auth/ca.ts";
import { readVerified, signFile, verifyManifest } from "../../lib/manifest/sign.ts";

Deno.test("signed manifests", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const ca = await CertificateAuthority.init(`${dir}/ca`, "test-ca");
    ca.close();
    const other = await CertificateAuthority.init(`${dir}/other`, "test-ca");
    other.close();
    const caPem = await Deno.readTextFile(`${dir}/ca/ca.pem`);
    const file = `${dir}/m.toml`;
    await Deno.writeTextFile(file, '[nodes.a]\naddress = "tcp!127.0.0.1!7001"\n');

    await t.step("a signed manifest verifies and its bytes come back", async () => {
      const sig = await signFile(file, `${dir}/ca`);
      assert.equal(sig, `${file}.sig`);
      assert.deepEqual(await readVerified(file, caPem), await Deno.readFile(file));
      assert.match(
        await Deno.readTextFile(sig),
        /^ferry-manifest-signature 1\nca sha256:[0-9a-f]{64}\n/,
      );
    });

    await t.step("a tampered manifest is refused, saying so", async () => {
      const good = await Deno.readFile(file);
      await Deno.writeTextFile(file, '[nodes.a]\naddress = "tcp!127.0.0.1!7002"\n');
      await assert.rejects(
        readVerified(file, caPem),
        /Refusing manifest .*altered after it was signed/,
      );
      await Deno.writeFile(file, good);
    });

    await t.step("a tampered signature is refused", async () => {
      const sig = await Deno.readTextFile(`${file}.sig`);
      const bad = sig.replace(/ed25519 (.)/, (_, c) => `ed25519 ${c === "A" ? "B" : "A"}`);
      await assert.rejects(
        verifyManifest(await Deno.readFile(file), bad, caPem),
        /signature is not valid/,
      );
    });

    await t.step("a manifest signed by another CA is refused", async () => {
      await assert.rejects(
        readVerified(file, await Deno.readTextFile(`${dir}/other/ca.pem`)),
        /signed by another CA/,
      );
    });

    await t.step("an unsigned manifest is refused", async () => {
      await Deno.remove(`${file}.sig`);
      await assert.rejects(readVerified(file, caPem), /is not signed .*--insecure-manifest/);
    });

    await t.step("a key that is not the CA's is refused when signing", async () => {
      await Deno.copyFile(`${dir}/other/ca.key`, `${dir}/ca/ca.key`);
      await assert.rejects(signFile(file, `${dir}/ca`), /does not match the CA certificate/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

import assert from "node:assert/strict";
import { CertificateAuthority } from "../../lib/auth/ca.ts";
import { importKeyPem, toBase64 } from "../../lib/auth/keys.ts";
import {
  appliedSerial,
  checkSerial,
  readSigned,
  readVerified,
  recordSerial,
  signFile,
  verifyManifest,
} from "../../lib/manifest/sign.ts";

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
      assert.deepEqual(sig, { path: `${file}.sig`, serial: 1 });
      assert.deepEqual(await readVerified(file, caPem), await Deno.readFile(file));
      assert.match(
        await Deno.readTextFile(sig.path),
        /^ferry-manifest-signature 2\nca sha256:[0-9a-f]{64}\nserial 1\nsha256 [0-9a-f]{64}\n/,
      );
      assert.equal(await Deno.readTextFile(`${dir}/ca/manifest.serial`), "1\n");
    });

    await t.step("each signature takes the next serial, and the serial is signed", async () => {
      assert.equal((await signFile(file, `${dir}/ca`)).serial, 2);
      assert.equal((await readSigned(file, caPem)).serial, 2);
      const sig = await Deno.readTextFile(`${file}.sig`);
      await assert.rejects(
        verifyManifest(await Deno.readFile(file), sig.replace("serial 2", "serial 9"), caPem),
        /signature is not valid/,
      );
      await Deno.writeTextFile(`${dir}/ca/manifest.serial`, "garbage\n");
      await assert.rejects(
        signFile(file, `${dir}/ca`),
        /manifest.serial' does not hold a serial number \('garbage'\)/,
      );
      await Deno.writeTextFile(`${dir}/ca/manifest.serial`, "2\n");
      assert.equal((await signFile(file, `${dir}/ca`)).serial, 3);
    });

    await t.step("a node refuses a serial lower than one it applied, naming both", async () => {
      const state = await Deno.makeTempDir({ dir });
      const three = await readSigned(file, caPem);
      assert.equal(await appliedSerial(state, three.ca), 0);
      await checkSerial(three, file, state);
      await recordSerial(three, state);
      assert.equal(await appliedSerial(state, three.ca), 3);
      await checkSerial(three, file, state);
      const older = { ...three, serial: 2 };
      await assert.rejects(
        checkSerial(older, file, state),
        /Refusing manifest '.*m\.toml': its serial 2 is lower than serial 3, already applied here/,
      );
      // Recording a lower serial never lowers what is kept.
      await recordSerial(older, state);
      assert.equal(await appliedSerial(state, three.ca), 3);
      // A signature from before serials counts as serial 0.
      await assert.rejects(
        checkSerial({ ...three, serial: 0 }, file, state),
        /has no serial .* lower than serial 3/,
      );
    });

    await t.step("a signature from before serials reads as serial 0", async () => {
      // Version 1: the Ed25519 signature of the manifest bytes alone.
      const bytes = await Deno.readFile(file);
      const key = await importKeyPem(await Deno.readTextFile(`${dir}/ca/ca.key`));
      const sig = new Uint8Array(await crypto.subtle.sign("Ed25519", key, bytes));
      const hex = (b: ArrayBuffer) =>
        [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
      const v1 = `ferry-manifest-signature 1\nca ${(await readSigned(file, caPem)).ca}\nsha256 ${
        hex(await crypto.subtle.digest("SHA-256", bytes))
      }\ned25519 ${toBase64(sig)}\n`;
      assert.equal(await verifyManifest(bytes, v1, caPem), 0);
      await assert.rejects(
        verifyManifest(new TextEncoder().encode("[nodes]\n"), v1, caPem),
        /altered after it was signed/,
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

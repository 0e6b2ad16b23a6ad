import assert from "node:assert/strict";
import {
  Broadcast,
  ctlFile,
  dir,
  eventFile,
  file,
  quote,
  SynthTree,
  textFile,
  tokenize,
} from "../../lib/fs/synthetic.ts";
import type { Node } from "../../lib/fs/tree.ts";
import { DMDIR, ORDWR, OREAD, OWRITE, QTDIR, StyxError } from "../../lib/styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function walkTo(root: Node, path: string): Promise<Node> {
  const r = await root.walk(path.split("/").filter((s) => s !== ""));
  assert.ok(r.node, `walk ${path}`);
  return r.node;
}

async function readAll(n: Node): Promise<string> {
  const f = await n.open(OREAD);
  let out = "";
  let off = 0n;
  for (;;) {
    const b = await f.read(off, 3);
    if (b.length === 0) break;
    off += BigInt(b.length);
    out += dec.decode(b, { stream: true });
  }
  await f.close();
  return out;
}

Deno.test("synthetic tree", async (t) => {
  let procs = [1, 2];
  let counter = 0;
  const log: string[] = [];
  const tree = new SynthTree(
    dir("", [
      textFile("hello", () => `hello ${++counter}\n`),
      ctlFile("ctl", [
        {
          name: "say",
          min: 1,
          max: Infinity,
          usage: "WORDS...",
          run: (a, ctx) => void log.push(`${ctx.caller.user}:${a.join("|")}`),
        },
        { name: "reset", run: () => void log.splice(0) },
      ], { read: () => log.join("\n") + "\n" }),
      textFile("secret", () => "s\n", { perm: 0o600, uid: "alice" }),
      dir("proc", () => procs.map((p) => dir(String(p), [textFile("pid", () => `${p}\n`)]))),
      file("perOpen", () => {
        const mine = ++counter;
        return { read: (off) => enc.encode(off === 0n ? `${mine}\n` : "") };
      }),
    ]),
    { uid: "ferry" },
  );
  const root = await tree.attach({ user: "glenda" }, "");

  await t.step("walk, stat, qids unique and nonzero", async () => {
    assert.equal(root.qid.type, QTDIR);
    const st = await root.stat();
    assert.equal(st.name, "/");
    assert.equal(st.mode, (DMDIR | 0o555) >>> 0);
    const f = await root.open(OREAD);
    const ents = await f.readDir();
    assert.deepEqual(ents.map((e) => e.name), ["hello", "ctl", "secret", "proc", "perOpen"]);
    const paths = new Set(ents.map((e) => e.qid.path));
    paths.add(root.qid.path);
    assert.equal(paths.size, 6);
    assert.ok(!paths.has(0n));
    const h = await walkTo(root, "hello");
    assert.equal(h.qid.path, ents[0]!.qid.path);
    const again = await walkTo(root, "proc/../hello");
    assert.equal(again.qid.path, h.qid.path);
    const up = await walkTo(root, "..");
    assert.equal(up.qid.path, root.qid.path);
    await assert.rejects(root.walk(["nope"]), { message: "file does not exist" });
    const partial = await root.walk(["proc", "nope"]);
    assert.equal(partial.node, undefined);
    assert.equal(partial.qids.length, 1);
    await assert.rejects(h.walk(["x"]), { message: "walk in non-directory" });
  });

  await t.step("text file: snapshot per open, read at offsets", async () => {
    const h = await walkTo(root, "hello");
    const f1 = await h.open(OREAD);
    const f2 = await h.open(OREAD);
    assert.equal(dec.decode(await f1.read(0n, 100)), "hello 1\n");
    assert.equal(dec.decode(await f1.read(6n, 100)), "1\n");
    assert.equal(dec.decode(await f2.read(0n, 100)), "hello 2\n");
    assert.equal((await f1.read(100n, 10)).length, 0);
    await assert.rejects(f1.write(0n, enc.encode("x")), { message: "fid not open for I/O" });
    await assert.rejects(h.open(OWRITE), { message: "permission denied" });
    await f1.close();
    await f2.close();
  });

  await t.step("ctl file: command table", async () => {
    const c = await walkTo(root, "ctl");
    const f = await c.open(ORDWR);
    assert.equal(await f.write(0n, enc.encode("say 'it''s' two words\n")), 22);
    assert.deepEqual(log, ["glenda:it's|two|words"]);
    await assert.rejects(f.write(0n, enc.encode("foo bar")), {
      message: "unknown ctl message 'foo'",
    });
    await assert.rejects(f.write(0n, enc.encode("say")), {
      message: "bad ctl message 'say': usage: say WORDS...",
    });
    await assert.rejects(f.write(0n, enc.encode("reset now")), {
      message: "bad ctl message 'reset': usage: reset",
    });
    await assert.rejects(f.write(0n, enc.encode("say 'open")), (e) => e instanceof StyxError);
    assert.equal(await readAll(c), "glenda:it's|two|words\n");
    await f.write(0n, enc.encode("reset\n\n"));
    assert.deepEqual(log, []);
    await f.close();
  });

  await t.step("permissions per owner and mode", async () => {
    const s = await walkTo(root, "secret");
    await assert.rejects(s.open(OREAD), { message: "permission denied" });
    const aliceRoot = await tree.attach({ user: "alice" }, "");
    assert.equal(await readAll(await walkTo(aliceRoot, "secret")), "s\n");
    assert.equal((await s.stat()).uid, "alice");
    await assert.rejects(root.create("x", 0o666, OWRITE), { message: "create prohibited" });
    await assert.rejects(s.remove(), { message: "remove prohibited" });
  });

  await t.step("dynamic directory", async () => {
    const p = await walkTo(root, "proc");
    let f = await p.open(OREAD);
    assert.deepEqual((await f.readDir()).map((e) => e.name), ["1", "2"]);
    const pid2 = await walkTo(root, "proc/2/pid");
    assert.equal(await readAll(pid2), "2\n");
    procs = [2, 3];
    f = await p.open(OREAD);
    assert.deepEqual((await f.readDir()).map((e) => e.name), ["2", "3"]);
    await assert.rejects(p.walk(["1"]), { message: "file does not exist" });
    assert.equal((await walkTo(root, "proc/2/pid")).qid.path, pid2.qid.path);
  });

  await t.step("per-open state", async () => {
    const n = await walkTo(root, "perOpen");
    const a = await readAll(n);
    const b = await readAll(n);
    assert.notEqual(a, b);
  });
});

Deno.test("event file: every reader gets every event; flush aborts", async () => {
  const events = new Broadcast<string>();
  const tree = new SynthTree(dir("", [eventFile("events", events)]));
  const root = await tree.attach({ user: "glenda" }, "");
  const n = await walkTo(root, "events");
  const r1 = await n.open(OREAD);
  const r2 = await n.open(OREAD);
  const p1 = r1.read(0n, 100);
  const p2 = r2.read(0n, 100);
  events.publish("ring 555");
  events.publish("hangup");
  assert.equal(dec.decode(await p1), "ring 555\n");
  assert.equal(dec.decode(await p2), "ring 555\n");
  assert.equal(dec.decode(await r1.read(0n, 3)), "han");
  assert.equal(dec.decode(await r1.read(0n, 100)), "gup\n");
  assert.equal(dec.decode(await r2.read(0n, 100)), "hangup\n");
  // A reader opened later sees only later events.
  const r3 = await n.open(OREAD);
  const ac = new AbortController();
  const blocked = r3.read(0n, 100, { signal: ac.signal });
  ac.abort();
  await assert.rejects(blocked, { message: "interrupted" });
  events.publish("sms 555 1");
  assert.equal(dec.decode(await r3.read(0n, 100)), "sms 555 1\n");
  await r1.close();
  await r2.close();
  await r3.close();
  assert.equal(events.readers, 0);
});

Deno.test("tokenize and quote", () => {
  assert.deepEqual(tokenize("  send  6412 'hello world' x''y "), [
    "send",
    "6412",
    "hello world",
    "xy",
  ]);
  assert.deepEqual(tokenize("a '' b"), ["a", "", "b"]);
  for (const w of ["plain", "it's", "two words", "", "tab\there", "a=b"]) {
    assert.deepEqual(tokenize(quote(w)), [w]);
  }
  assert.throws(() => tokenize("'x"), { message: "unterminated quote in ''x'" });
});

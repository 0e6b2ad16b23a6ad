import assert from "node:assert/strict";
import { NetDevice } from "../../lib/dev/net/device.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { Namespace } from "../../lib/ns/namespace.ts";
import { fileNameFor, httpGet, webgrab } from "../../lib/net/webgrab.ts";
import { harness } from "../sh/harness.ts";
import { makeFixture } from "../auth/fixture.ts";

const dec = new TextDecoder();

Deno.test("webgrab through the namespace's /net", async (t) => {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    (req, info) => {
      const u = new URL(req.url);
      const remote = (info.remoteAddr as Deno.NetAddr).hostname;
      switch (u.pathname) {
        case "/n09230945.asp":
          return new Response(`${remote}\n`);
        case "/moved":
          return new Response(null, { status: 302, headers: { location: "/n09230945.asp" } });
        case "/loop":
          return new Response(null, { status: 301, headers: { location: "/loop" } });
        case "/stream": {
          const body = new ReadableStream<Uint8Array>({
            start(c) {
              for (let i = 0; i < 50; i++) c.enqueue(new TextEncoder().encode(`line ${i}\n`));
              c.close();
            },
          });
          return new Response(body);
        }
        case "/":
          return new Response("top");
        default:
          return new Response("no", { status: 404, statusText: "Not Found" });
      }
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  const dev = new NetDevice();
  const mem = new MemTree();
  await mem.mkdirp("/net");
  await mem.mkdirp("/usr/glenda");
  const ns = new Namespace(mem, { caller: { user: "glenda" } });
  await ns.mount(dev.tree(), "/net");
  try {
    await t.step("file names from URLs", () => {
      assert.equal(fileNameFor("http://h/a/b/n09230945.asp?x=1"), "n09230945.asp");
      assert.equal(fileNameFor("http://h"), "index.html");
      assert.equal(fileNameFor("http://h/dir/"), "index.html");
      assert.throws(() => fileNameFor("not a url"), /bad URL 'not a url'/);
    });
    await t.step("GET saves the body under the URL's last element", async () => {
      const r = await webgrab(ns, `${base}/n09230945.asp`, { dir: "/usr/glenda" });
      assert.equal(r.path, "/usr/glenda/n09230945.asp");
      assert.equal(dec.decode(await ns.readFile(r.path)), "127.0.0.1\n");
    });
    await t.step("redirects, chunked bodies, errors", async () => {
      const r = await httpGet(ns, `${base}/moved`);
      assert.equal(r.status, 200);
      assert.deepEqual(r.chain, [`${base}/moved`, `${base}/n09230945.asp`]);
      const s = await httpGet(ns, `${base}/stream`);
      assert.equal(dec.decode(s.body).split("\n").length, 51);
      await assert.rejects(webgrab(ns, `${base}/missing`), /HTTP 404/);
      await assert.rejects(httpGet(ns, `${base}/loop`), /too many redirects/);
      await assert.rejects(httpGet(ns, "ftp://x/y"), /only http and https/);
      await assert.rejects(httpGet(ns, "http://127.0.0.1:1/"), /cannot dial.*connection refused/);
      assert.deepEqual(dev.conversations(), []);
    });
    await t.step("the shell's webgrab builtin", async () => {
      const { sh, out, err } = harness({ ns, user: "glenda", cwd: "/usr/glenda" });
      assert.equal(await sh.run(`webgrab -v ${base}/`), "", err.text());
      assert.match(out.text(), /^200 OK: 3 bytes to \/usr\/glenda\/index.html\n$/);
      assert.equal(dec.decode(await ns.readFile("/usr/glenda/index.html")), "top");
      assert.notEqual(await sh.run(`webgrab ${base}/missing`), "");
      assert.match(err.text(), /webgrab: .*HTTP 404/);
    });
  } finally {
    ac.abort();
    await server.finished;
    dev.closeAll();
    await ns.close();
  }
});

Deno.test("webgrab https: TLS over the tunnelled stream, certificate checked", async () => {
  const fx = await makeFixture();
  const ac = new AbortController();
  const dev = new NetDevice();
  const mem = new MemTree();
  await mem.mkdirp("/net");
  const ns = new Namespace(mem, { caller: { user: "glenda" } });
  await ns.mount(dev.tree(), "/net");
  try {
    const site = await fx.creds("localhost", "node", { sans: ["localhost"] });
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: site.cert,
      key: site.key,
      signal: ac.signal,
      onListen: () => {},
    }, () => new Response("secure hello"));
    const url = `https://localhost:${server.addr.port}/hello.txt`;
    const r = await httpGet(ns, url, { ca: site.ca });
    assert.equal(r.status, 200);
    assert.equal(dec.decode(r.body), "secure hello");
    // Without that CA the server's certificate is not trusted.
    await assert.rejects(httpGet(ns, url));
    ac.abort();
    await server.finished;
    assert.deepEqual(dev.conversations(), []);
  } finally {
    ac.abort();
    dev.closeAll();
    await ns.close();
    await fx.cleanup();
  }
});

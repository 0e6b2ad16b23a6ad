import assert from "node:assert/strict";
import { childPath, cleanPath, joinNames, splitNames } from "../../lib/ns/path.ts";

Deno.test("cleanPath follows Plan 9 cleanname", async (t) => {
  await t.step("absolute paths", () => {
    assert.equal(cleanPath("/"), "/");
    assert.equal(cleanPath(""), "/");
    assert.equal(cleanPath("//usr///glenda/"), "/usr/glenda");
    assert.equal(cleanPath("/usr/./glenda/."), "/usr/glenda");
    assert.equal(cleanPath("/usr/glenda/../inferno"), "/usr/inferno");
    assert.equal(cleanPath("/../.."), "/");
    assert.equal(cleanPath("/a/b/../../.."), "/");
  });
  await t.step("relative paths use cwd", () => {
    assert.equal(cleanPath("lib", "/usr/glenda"), "/usr/glenda/lib");
    assert.equal(cleanPath("../x", "/usr/glenda"), "/usr/x");
    assert.equal(cleanPath(".", "/tmp"), "/tmp");
    assert.equal(cleanPath("x"), "/x");
  });
  await t.step("device paths keep their device root", () => {
    assert.equal(cleanPath("#U*"), "#U*");
    assert.equal(cleanPath("#U*/"), "#U*");
    assert.equal(cleanPath("#U*/home//alice/../bob"), "#U*/home/bob");
    assert.equal(cleanPath("#U*/../.."), "#U*");
    assert.equal(cleanPath("#U"), "#U");
    assert.equal(cleanPath("sub", "#U*/home"), "#U*/home/sub");
  });
  await t.step("helpers", () => {
    assert.deepEqual(splitNames("/a//b/./c/.."), ["a", "b"]);
    assert.deepEqual(splitNames("/"), []);
    assert.equal(joinNames([]), "/");
    assert.equal(joinNames(["a", "b"]), "/a/b");
    assert.equal(childPath("/", "a"), "/a");
    assert.equal(childPath("/a", "b"), "/a/b");
  });
});

/**
 * FUSE mount speed: `ferry mount` of a `ferry listen -A` server against
 * sshfs over a throwaway sshd, both on 127.0.0.1, in the same run.
 *
 * Workloads: cp of a 1 GiB file out of the mount, `ls -lR` and `tar c` of
 * a tree of 10,000 small files, `git status` in a mounted checkout. Every
 * run gets a fresh mount (no cache of either side carries over). Each is
 * run RUNS times with every cache dropped and the source re-read on the
 * host before each run (so the mounts start cold and the disk is out of it); the median is
 * reported. Needs root, /dev/fuse, sshfs and openssh-server
 * (`apt-get install -y sshfs openssh-server`).
 *
 * Usage: deno run --allow-all bench/fuse_probe.ts [--runs N] [--size-mb N] [--files N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { median } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "3" },
    "size-mb": { type: "string", default: "1024" },
    files: { type: "string", default: "10000" },
    o: { type: "string", default: "" },
  },
});
const RUNS = Number(values.runs);
const SIZE_MB = Number(values["size-mb"]);
const FILES = Number(values.files);
const FERRY = new URL("../cmd/ferry.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function sh(script: string, limit = 600): Promise<string> {
  const o = await new Deno.Command("timeout", {
    args: ["-s", "KILL", String(limit), "bash", "-c", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (o.code !== 0) {
    throw new Error(`'${script}' failed (${o.code}): ${dec.decode(o.stderr)}`);
  }
  return dec.decode(o.stdout);
}

async function waitLine(r: ReadableStreamDefaultReader<Uint8Array>, re: RegExp): Promise<string> {
  let buf = "";
  for (;;) {
    const { value, done } = await r.read();
    if (done) throw new Error(`process ended before printing ${re}: ${buf}`);
    buf += dec.decode(value);
    const m = buf.split("\n").find((l) => re.test(l));
    if (m !== undefined) return m;
  }
}

async function until(what: string, f: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up waiting for ${what}`);
}

async function isMounted(mp: string): Promise<boolean> {
  const t = await Deno.readTextFile("/proc/self/mounts");
  return t.split("\n").some((l) => l.split(" ")[1] === mp);
}

/** Drop every cache (the mounts' too), re-read the source on the host, then time `script`. */
async function timed(script: string, warm: string): Promise<number> {
  await sh("sync; echo 3 > /proc/sys/vm/drop_caches");
  await sh(warm);
  const t0 = performance.now();
  await sh(script);
  return (performance.now() - t0) / 1000;
}

const work = await Deno.makeTempDir({ prefix: "ferry-fuse-bench-" });
const src = `${work}/src`;
const mFerry = `${work}/ferry`;
const mSsh = `${work}/sshfs`;
const children: Deno.ChildProcess[] = [];
let sshdPid = "";
let unmountFerryLast = async () => {};

try {
  await Deno.mkdir(src);
  await Deno.mkdir(mFerry);
  await Deno.mkdir(mSsh);
  console.error(`preparing ${SIZE_MB} MiB file and ${FILES} small files in ${src}`);
  await sh(`head -c ${SIZE_MB}M /dev/urandom > ${src}/big`);
  const chunk = new Uint8Array(4096).map((_, i) => (i * 31) & 0xff);
  const per = 100;
  for (let d = 0; d * per < FILES; d++) {
    await Deno.mkdir(`${src}/tree/d${d}`, { recursive: true });
    for (let f = 0; f < per && d * per + f < FILES; f++) {
      Deno.writeFileSync(
        `${src}/tree/d${d}/f${f}`,
        chunk.subarray(0, 512 + ((d * per + f) % 3584)),
      );
    }
  }
  // One checkout per mount: each mount's inode numbers end up in its index.
  const origin = new URL("..", import.meta.url).pathname;
  await sh(`git clone -q --no-hardlinks ${origin} ${src}/repo-ferry`);
  await sh(`git clone -q --no-hardlinks ${origin} ${src}/repo-sshfs`);

  // Ferry: a server process and a mount process.
  const listen = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", FERRY, "listen", "-A", "tcp!127.0.0.1!0", src],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  children.push(listen);
  const addr = (await waitLine(listen.stdout.getReader(), /listening on/))
    .replace("listening on ", "").trim();
  let ferryMount: Deno.ChildProcess | null = null;
  const mountFerry = async () => {
    const c = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        FERRY,
        "mount",
        "-f",
        "-A",
        ...(values.o ? ["-o", values.o] : []),
        addr,
        mFerry,
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    ferryMount = c;
    await waitLine(c.stdout.getReader(), /^mounted/);
  };
  const unmountFerry = async () => {
    const c = ferryMount;
    ferryMount = null;
    if (!c) return;
    c.kill("SIGTERM");
    await c.status;
  };

  // sshfs over a throwaway sshd with its own host key and client key.
  const port = 20000 + Math.floor(Math.random() * 20000);
  await sh([
    `ssh-keygen -q -t ed25519 -N '' -f ${work}/hostkey`,
    `ssh-keygen -q -t ed25519 -N '' -f ${work}/userkey`,
    `cp ${work}/userkey.pub ${work}/authorized_keys`,
    `chmod 600 ${work}/authorized_keys`,
    "mkdir -p /run/sshd",
  ].join(" && "));
  await Deno.writeTextFile(
    `${work}/sshd_config`,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${work}/hostkey`,
      `AuthorizedKeysFile ${work}/authorized_keys`,
      `PidFile ${work}/sshd.pid`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "StrictModes no",
      "UsePAM no",
      "Subsystem sftp internal-sftp",
    ].join("\n") + "\n",
  );
  await sh(`/usr/sbin/sshd -f ${work}/sshd_config`);
  await until("sshd", async () => (await Deno.stat(`${work}/sshd.pid`).catch(() => null)) !== null);
  sshdPid = (await Deno.readTextFile(`${work}/sshd.pid`)).trim();
  const mountSsh = async () => {
    await sh(
      `sshfs -o IdentityFile=${work}/userkey,StrictHostKeyChecking=no,` +
        `UserKnownHostsFile=/dev/null,port=${port},LogLevel=ERROR root@127.0.0.1:${src} ${mSsh}`,
    );
    await until("sshfs mount", () => isMounted(mSsh));
  };
  const unmountSsh = async () => {
    await sh(`fusermount3 -u ${mSsh} || umount ${mSsh}`);
    await until("sshfs unmount", async () => !(await isMounted(mSsh)));
  };
  unmountFerryLast = unmountFerry;
  await mountFerry();
  await mountSsh();

  // git status once through each mount (it rewrites the index), then a
  // pause so that no entry is "racily clean" in the timed runs.
  for (const mp of [mFerry, mSsh]) {
    const r = `${mp}/repo-${mp === mFerry ? "ferry" : "sshfs"}`;
    await sh(`cd ${r} && git -c safe.directory='*' status --short > /dev/null`);
  }
  await unmountFerry();
  await unmountSsh();
  await new Promise((r) => setTimeout(r, 2000));
  const warmTree = `tar cf - -C ${src} tree | cat > /dev/null`;
  const loads: Array<[string, (mp: string) => string, string]> = [
    [`cp ${SIZE_MB} MiB file`, (mp) => `cp ${mp}/big /dev/null`, `cat ${src}/big > /dev/null`],
    [`ls -lR ${FILES} files`, (mp) => `ls -lR ${mp}/tree > /dev/null`, warmTree],
    [`tar c ${FILES} files`, (mp) => `tar cf - -C ${mp} tree | cat > /dev/null`, warmTree],
    [
      "git status",
      (mp) =>
        `cd ${mp}/repo-${mp === mFerry ? "ferry" : "sshfs"} && ` +
        `git -c safe.directory='*' status --short > /dev/null`,
      `tar cf - -C ${src} repo-ferry repo-sshfs | cat > /dev/null`,
    ],
  ];
  const rows: string[] = [];
  console.log(
    `median of ${RUNS} runs (seconds); before each: fresh mount, caches dropped, ` +
      "source re-read on the host",
  );
  console.log("workload                 ferry     sshfs   ferry speed vs sshfs");
  for (const [name, cmd, warm] of loads) {
    const f: number[] = [];
    const s: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      await mountFerry();
      f.push(await timed(cmd(mFerry), warm));
      await unmountFerry();
      await mountSsh();
      s.push(await timed(cmd(mSsh), warm));
      await unmountSsh();
    }
    const fm = median(f);
    const sm = median(s);
    const row = `${name.padEnd(22)} ${fm.toFixed(3).padStart(7)}  ${sm.toFixed(3).padStart(7)}  ${
      (sm / fm).toFixed(2)
    }x`;
    rows.push(row);
    console.log(
      row +
        (name.startsWith("cp")
          ? `  (ferry ${(SIZE_MB / fm).toFixed(0)} MiB/s, sshfs ${(SIZE_MB / sm).toFixed(0)} MiB/s)`
          : ""),
    );
  }
} finally {
  await sh(`umount ${mSsh} 2>/dev/null || umount -l ${mSsh} 2>/dev/null || true`).catch(() => {});
  await unmountFerryLast();
  if (sshdPid) await sh(`kill ${sshdPid} || true`).catch(() => {});
  for (const c of children.reverse()) {
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
    await c.status;
  }
  if (await isMounted(mFerry)) await sh(`umount -l ${mFerry}`).catch(() => {});
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

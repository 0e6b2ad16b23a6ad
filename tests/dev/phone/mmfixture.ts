/**
 * The real ModemManager for tests: a private D-Bus system bus, the
 * simulated AT modem ({@link ./atmodem.ts}) on a pseudo-terminal, and
 * `ModemManager --test-no-udev --no-auto-scan` in a private mount namespace
 * where the pty looks like a serial port:
 *
 * - `/sys/class/tty` is a tmpfs holding `ttyFERRY0`, a link to a directory
 *   of ours whose `subsystem` link ends in `tty` (ModemManager insists the
 *   sysfs entry exists when udev is not used);
 * - `/dev` is a tmpfs with the few nodes the daemon needs, the host's
 *   `/dev/pts`, and `ttyFERRY0` linking to the modem's pty;
 * - `/lib/udev/rules.d` holds ModemManager's rules plus one marking
 *   `ttyFERRY*` as a modem port (without it the port is dropped as virtual).
 *
 * Nothing of the host's is changed. Needs root with CAP_SYS_ADMIN, and the
 * Debian packages `modemmanager` and `dbus`; {@link mmSkipReason} says what
 * is missing.
 *
 * @module
 */

import { modemControl, type ModemState } from "./atmodem.ts";

const PORT = "ttyFERRY0";

function which(cmd: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").concat(["/usr/sbin"])) {
    try {
      Deno.statSync(cmd.startsWith("/") ? cmd : `${dir}/${cmd}`);
      return true;
    } catch { /* next */ }
  }
  return false;
}

/**
 * Why ModemManager cannot run here ("" when it can): not root, no
 * CAP_SYS_ADMIN, or a program missing.
 */
export function mmSkipReason(): string {
  if (Deno.build.os !== "linux") return "ModemManager tests need Linux";
  if (Deno.uid() !== 0) return "ModemManager tests need root (a private mount namespace)";
  const needs = [
    ["ModemManager", "modemmanager"],
    ["mmcli", "modemmanager"],
    ["dbus-daemon", "dbus"],
    ["dbus-send", "dbus"],
    ["unshare", "util-linux"],
    ["/usr/lib/polkit-1/polkitd", "polkitd"],
  ];
  for (const [cmd, pkg] of needs) {
    if (!which(cmd!)) return `'${cmd}' not found: install the Debian package '${pkg}'`;
  }
  // The daemon runs in a private mount namespace: try making one.
  try {
    const r = new Deno.Command("unshare", { args: ["--mount", "true"], stderr: "null" })
      .outputSync();
    if (!r.success) return "ModemManager tests need CAP_SYS_ADMIN ('unshare --mount' failed)";
  } catch (e) {
    return `cannot run 'unshare': ${(e as Error).message}`;
  }
  // Asked of a program: Deno reads /sys and /proc only under --allow-all.
  const sysfs = new Deno.Command("test", { args: ["-d", "/sys/class/tty"] }).outputSync();
  if (!sysfs.success) return "ModemManager tests need sysfs (/sys/class/tty is missing)";
  return "";
}

const BUS_CONF = (socket: string) =>
  `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`;

// Runs as root in a fresh mount namespace; $T is the fixture's directory,
// $PTY the modem's pty. The daemon replaces the shell (exec), so killing
// the process stops it and the namespace goes with it.
const NS_SCRIPT = `set -e
mount --make-rprivate /
mount -t tmpfs ferry-tty /sys/class/tty
ln -s "$T/sysdev/${PORT}" /sys/class/tty/${PORT}
mkdir -p "$T/hostdev"
mount --rbind /dev "$T/hostdev"
mount -t tmpfs ferry-dev /dev
for n in null zero full random urandom tty ptmx; do
  touch /dev/$n
  mount --bind "$T/hostdev/$n" /dev/$n
done
mkdir /dev/pts /dev/shm
mount --bind "$T/hostdev/pts" /dev/pts
ln -s /proc/self/fd /dev/fd
ln -s "$PTY" /dev/${PORT}
mount --bind "$T/rules" /lib/udev/rules.d
exec ModemManager --test-no-udev --no-auto-scan --debug
`;

/** Options for {@link MmFixture.start}. */
export interface MmFixtureOptions {
  /** Print the daemon's log to stderr as it comes (default: kept in {@link MmFixture.log}). */
  echo?: boolean;
}

/** A running private bus, simulated modem and ModemManager. */
export class MmFixture {
  /** The D-Bus address of the private system bus. */
  readonly busAddress: string;
  /** ModemManager's output so far (for messages when something fails). */
  log = "";
  #bus: Deno.ChildProcess | undefined;
  #polkit: Deno.ChildProcess | undefined;
  #modem: Deno.ChildProcess | undefined;
  #mm: Deno.ChildProcess | undefined;
  #mmDone: Promise<unknown> | undefined;
  #pty = "";

  private constructor(readonly dir: string, readonly opts: MmFixtureOptions) {
    this.busAddress = `unix:path=${dir}/bus.sock`;
  }

  /** The modem's control socket. */
  get modemSocket(): string {
    return `${this.dir}/modem.sock`;
  }

  /** Environment that points D-Bus clients (mmcli, the backend) at the private bus. */
  get env(): Record<string, string> {
    return { DBUS_SYSTEM_BUS_ADDRESS: this.busAddress };
  }

  /**
   * Start everything and wait until ModemManager has the modem enabled
   * and registered. Throws with the daemon's log when it never gets there.
   */
  static async start(opts: MmFixtureOptions = {}): Promise<MmFixture> {
    const dir = await Deno.makeTempDir({ prefix: "ferry-mm-" });
    const f = new MmFixture(dir, opts);
    try {
      await f.#setup();
      return f;
    } catch (e) {
      await f.stop();
      throw e;
    }
  }

  async #setup(): Promise<void> {
    const d = this.dir;
    // polkitd drops to its own user and must still reach the bus socket.
    await Deno.chmod(d, 0o755);
    await Deno.writeTextFile(`${d}/bus.conf`, BUS_CONF(`${d}/bus.sock`));
    this.#bus = new Deno.Command("dbus-daemon", {
      args: ["--config-file", `${d}/bus.conf`, "--nofork", "--nopidfile"],
      env: this.env,
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor(async () => {
      try {
        (await Deno.connect({ transport: "unix", path: `${d}/bus.sock` })).close();
        return true;
      } catch {
        return false;
      }
    }, "the private D-Bus never listened");
    // ModemManager asks polkit before it takes a kernel event or sends; the
    // bus activates nothing (it might start the host's own daemons), so
    // polkitd is started here. It authorises root.
    this.#polkit = new Deno.Command("/usr/lib/polkit-1/polkitd", {
      args: ["--no-debug"],
      env: this.env,
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor(async () => {
      const r = await new Deno.Command("dbus-send", {
        args: [
          `--bus=${this.busAddress}`,
          "--print-reply",
          "--dest=org.freedesktop.DBus",
          "/org/freedesktop/DBus",
          "org.freedesktop.DBus.NameHasOwner",
          "string:org.freedesktop.PolicyKit1",
        ],
        stdout: "piped",
        stderr: "null",
      }).output().catch(() => undefined);
      return r !== undefined && new TextDecoder().decode(r.stdout).includes("true");
    }, "polkitd never appeared on the private bus");

    // The simulated modem, as its own process.
    const modemTs = new URL("./atmodem.ts", import.meta.url).pathname;
    this.#modem = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", modemTs, this.modemSocket],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = this.#modem.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let first = "";
    while (!first.includes("\n")) {
      const r = await reader.read();
      if (r.done) throw new Error("The simulated modem exited before opening its pty");
      first += r.value;
    }
    reader.releaseLock();
    this.#modem.stdout.cancel().catch(() => {});
    this.#pty = first.trim().replace(/^pty /, "");

    // The fake sysfs device and the udev rules.
    await Deno.mkdir(`${d}/sysdev/${PORT}`, { recursive: true });
    await Deno.symlink("/sys/class/tty", `${d}/sysdev/${PORT}/subsystem`);
    await Deno.mkdir(`${d}/rules`);
    for await (const e of Deno.readDir("/lib/udev/rules.d")) {
      if (/^(7[7-9]|80)-mm-/.test(e.name)) {
        await Deno.copyFile(`/lib/udev/rules.d/${e.name}`, `${d}/rules/${e.name}`);
      }
    }
    await Deno.writeTextFile(
      `${d}/rules/77-mm-zz-ferry-test.rules`,
      `SUBSYSTEM=="tty", KERNEL=="ttyFERRY*", ENV{ID_MM_DEVICE_PROCESS}="1"\n`,
    );
    await this.startDaemon();
  }

  /** Start ModemManager (again) and report the port to it; waits until the modem is registered. */
  async startDaemon(): Promise<void> {
    await Deno.writeTextFile(`${this.dir}/ns.sh`, NS_SCRIPT);
    this.#mm = new Deno.Command("unshare", {
      args: ["--mount", "--propagation", "private", "bash", `${this.dir}/ns.sh`],
      env: { ...this.env, T: this.dir, PTY: this.#pty },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const collect = async (s: ReadableStream<Uint8Array>) => {
      for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
        this.log += chunk;
        if (this.opts.echo) Deno.stderr.writeSync(new TextEncoder().encode(chunk));
      }
    };
    this.#mmDone = Promise.all([
      collect(this.#mm.stdout),
      collect(this.#mm.stderr),
      this.#mm.status,
    ]);
    await waitFor(
      async () => {
        const r = await this.mmcli(["-L"]).catch(() => undefined);
        return r !== undefined && r.code === 0;
      },
      "ModemManager never appeared on the bus",
      () => this.log,
    );
    const ev = await this.mmcli([`--report-kernel-event=action=add,subsystem=tty,name=${PORT}`]);
    if (ev.code !== 0) throw new Error(`mmcli --report-kernel-event failed: ${ev.out}`);
    // A modem starts disabled; a phone's session (or Ferry's backend, if it
    // is running) enables it.
    let state = "";
    await waitFor(
      async () => {
        const r = await this.mmcli(["-m", "any", "-K"]);
        state = r.out.match(/modem\.generic\.state\s*:\s*(\S+)/)?.[1] ?? "";
        return state !== "" && state !== "unknown" && state !== "initializing";
      },
      "the modem never appeared",
      () => this.log.slice(-6000),
    );
    if (state === "disabled") await this.mmcli(["-m", "any", "-e"]);
    await waitFor(
      async () => {
        const r = await this.mmcli(["-m", "any", "-K"]);
        return /modem\.generic\.state\s*:\s*(registered|connected)/.test(r.out);
      },
      "the modem never became registered",
      () => this.log.slice(-6000),
    );
  }

  /** Stop ModemManager (the modem and bus stay). */
  async stopDaemon(): Promise<void> {
    const mm = this.#mm;
    this.#mm = undefined;
    if (!mm) return;
    try {
      mm.kill("SIGTERM");
    } catch { /* gone */ }
    await this.#mmDone;
  }

  /** Run mmcli against the private bus. */
  async mmcli(args: string[]): Promise<{ code: number; out: string }> {
    const r = await new Deno.Command("mmcli", {
      args,
      env: this.env,
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    const dec = new TextDecoder();
    return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
  }

  /** Send a control command to the modem (ring, sms, answer, hangup, refuse). */
  modem(line: string): Promise<string> {
    return modemControl(this.modemSocket, line);
  }

  /** What the modem has really sent and where its call stands. */
  async state(): Promise<ModemState> {
    return JSON.parse(await this.modem("state")) as ModemState;
  }

  /** Stop the daemon, the modem and the bus, and remove the directory. */
  async stop(): Promise<void> {
    await this.stopDaemon();
    for (const p of [this.#modem, this.#polkit, this.#bus]) {
      if (!p) continue;
      try {
        p.kill("SIGTERM");
      } catch { /* gone */ }
      await p.status;
    }
    this.#modem = this.#polkit = this.#bus = undefined;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Wait until `ok()` is true, checking every 100 ms; after 60 s give up with
 * `what` (and `detail()`). A hang guard, not a timing requirement.
 */
export async function waitFor(
  ok: () => Promise<boolean> | boolean,
  what: string,
  detail?: () => string,
): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}${detail ? `\n${detail()}` : ""}`);
}

if (import.meta.main) {
  const skip = mmSkipReason();
  if (skip) {
    console.error(skip);
    Deno.exit(1);
  }
  const f = await MmFixture.start({ echo: Deno.args.includes("-v") });
  console.log(`bus ${f.busAddress}\nmodem ${f.modemSocket}`);
  console.log((await f.mmcli(["-m", "any"])).out);
  await f.stop();
}

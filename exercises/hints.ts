// Everything the checkers know about the exercises and the homework besides
// the code: titles, man pages, hints (shown one at a time by `--hint`), and
// for the homework what a person has to judge. Hints live here and only
// here, so an exercise file holds its story and its TODOs, never an answer.

/** A fill-in exercise: exercises/<slug>/index.ts, checked by steps/<slug>/verify.ts. */
export interface Exercise {
  title: string
  /** Man pages worth reading first, as `name(section)`. */
  man: string[]
  /** From a nudge to nearly the answer; `--hint` shows the next one. */
  hints: [string, ...string[]]
}

/** A homework problem: exercises/homework/<slug>/, checked by its check.ts. */
export interface Homework extends Exercise {
  /** The file the learner edits, in exercises/homework/<slug>/. */
  file: string
  /** What the checker cannot decide and a person must read; empty if the machine decides it all. */
  person: string
}

/** The exercises, by step slug. */
export const exercises: Record<string, Exercise> = {
  '01-exec': {
    title: 'exec: become the command',
    man: ['execve(2)', 'execvp(3)', 'prctl(2)'],
    hints: [
      'Two TODOs, both in child(). The first is one call to ask the kernel for a signal on the parent\'s death; the second replaces the process.',
      'prctl(2) has an option PR_SET_PDEATHSIG whose argument is the signal to receive; shared/process.ts exports prctl, PR_SET_PDEATHSIG and SIGKILL.',
      'execve(2) never returns on success, and its third argument is the whole environment the command gets. shared/process.ts has execCommand(command, env), which also undoes Node\'s close-on-exec on fds 0-2 and turns ENOENT into exit 127; containerEnv(hostname(), container.env) makes the environment.',
    ],
  },
  '02-uts': {
    title: 'UTS namespace: a hostname of its own',
    man: ['uts_namespaces(7)', 'unshare(2)', 'clone(2)', 'sethostname(2)'],
    hints: [
      'reexecChild(config, cloneFlags) takes the CLONE_NEW* flags the child is born with; 0 means none.',
      'The flag for a UTS namespace is CLONE_NEWUTS (shared/namespaces.ts). Until it is there, the guard stops the child before sethostname.',
      'shared/uts.ts has sethostname(name); the name is container.hostname, which main() made: -h\'s, or else container.id.',
    ],
  },
  '03-chroot': {
    title: 'chroot: the image is /',
    man: ['chroot(2)', 'chdir(2)'],
    hints: [
      'Two calls, in child(), before the command runs: change the root, then the working directory.',
      'shared/mounts.ts has chroot(path); shared/process.ts has chdir(path). The image is container.rootfs.',
      'After chroot(container.rootfs), chdir(\'/\'): the cwd left outside the root is the classic chroot escape, and `cat ../../…` in verify tries it.',
    ],
  },
  '04-pid-proc': {
    title: 'PID namespace and /proc',
    man: ['pid_namespaces(7)', 'proc(5)', 'mount(2)', 'umount(2)'],
    hints: [
      'Three TODOs: one flag in run(), one deferred clean-up in run(), one mount in child() after the chroot.',
      'CLONE_NEWPID joins CLONE_NEWUTS with `|`. mount(source, target, fstype, flags): source and fstype are both \'proc\', target \'/proc\' (inside the image, after the chroot).',
      'The flags are MS_NOSUID | MS_NODEV | MS_NOEXEC. On the host the mount is at join(container.rootfs, \'proc\'): cleanup.defer(() => unmountIfMounted(that)) right after the child starts.',
    ],
  },
  '05-mount-ns': {
    title: 'mount namespace, pivot_root and a minimal /dev',
    man: ['mount_namespaces(7)', 'pivot_root(2)', 'mount(2)', 'umount(2)', 'sysfs(5)', 'ipc_namespaces(7)', 'mq_overview(7)'],
    hints: [
      'Start in run(): add CLONE_NEWNS and CLONE_NEWIPC. Then child(): propagation, then pivotInto(), then /sys and /dev. The guards tell you which part is still missing. The terminal\'s lines (TerminalRelay, openContainerTerminal) are given, not a TODO: notes/05-mount-ns.md explains them.',
      'Propagation: mount(null, \'/\', null, MS_REC | MS_PRIVATE). pivot_root(new_root, put_old) needs new_root to be a mount point: a bind mount of rootfs onto itself (MS_BIND) makes one, before the bindVolumes() line that is there already (-v binds go inside the new root).',
      'chdir(rootfs), then pivot_root(\'.\', \'.\'): the old root is now stacked on /. umount2(\'.\', MNT_DETACH) detaches it; chdir(\'/\'). /sys: sysfs with MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC; /dev: mountDev(\'/dev\'). /dev/mqueue: mkdirSync it, then mount(\'mqueue\', \'/dev/mqueue\', \'mqueue\', MS_NOSUID | MS_NODEV | MS_NOEXEC).',
    ],
  },
  '06-cgroups': {
    title: 'cgroups: limits the kernel enforces',
    man: ['cgroups(7)', 'cgroup v2: Documentation/admin-guide/cgroup-v2.rst'],
    hints: [
      'shared/cgroups.ts only finds things: cgroupFor(container.id, limits) returns dirs (one per hierarchy: v1, v2 or both) and writes ({ dir, file, value }). The mkdir, the writes and the rmdir are yours, with node:fs. shared/container.ts has the sync pipe: STDIO_WITH_SYNC, childStarted, tellChild, waitForParent.',
      'In run(): const cgroup = cgroupFor(container.id, limits); cleanup.defer(async () => { for (const { dir } of cgroup.dirs) await rmdirCgroup(dir) }); mkdirSync each dir; writeFileSync(join(dir, file), value) for each write. Pass terminal.stdio(STDIO_WITH_SYNC) to reexecChild (the sync pipe, plus the terminal\'s socket when there is one), await childStarted(child), write String(child.pid) to join(dir, \'cgroup.procs\') for each dir, then tellChild(child).',
      'In child(), first thing after prctl: waitForParent(). The parent wrote the child\'s PID into cgroup.procs of every hierarchy while the child waited; memory is charged to the cgroup a process is in when it allocates, so the move comes once Node has started.',
    ],
  },
  '07-overlay': {
    title: 'overlayfs: a copy-on-write root per container',
    man: ['mount(2)', 'overlayfs: Documentation/filesystems/overlayfs.rst'],
    hints: [
      'The parent already made the container\'s directory (container.dir) with upper/, work/ and merged/ in it; overlayDirs(container.dir) names them. The mount happens in the child, after MS_PRIVATE, so it exists only in the container\'s mount namespace.',
      'mount(source, target, fstype, flags, data): the source is just a label (\'overlay\'), the target is merged, the type \'overlay\', and the data string lists the layers: lowerdir=…,upperdir=…,workdir=…. lowerdir takes several directories, `:` between them, the top one first, as container.lowerdirs has them.',
      'const { upper, work, merged } = overlayDirs(container.dir); mount(\'overlay\', merged, \'overlay\', 0, `lowerdir=${container.lowerdirs.join(\':\')},upperdir=${upper},workdir=${work}`); then pivotInto(merged, container.volumes): the -v binds go into the overlay too.',
    ],
  },
  '08-net': {
    title: 'network namespace: a veth pair and a bridge',
    man: ['network_namespaces(7)', 'veth(4)', 'ip-link(8)', 'netdevice(7)', 'route(7)'],
    hints: [
      'Five TODOs: a flag, the address and the veth pair, and the word to the child in run(); the address and the network set-up in child(). The parent and the child meet on the sync pipe (fd 3): the parent writes its word, the child reads it. shared/net.ts has allocateNetwork/releaseNetwork (the address and the bridge), ipAsync(), which runs ip(8) commands on the host, one line each, as a batch, and linkUp/addAddress/addDefaultRoute for the inside.',
      'The flag is CLONE_NEWNET (with --network host, none: 0). In run(): const network = net.mode === \'bridge\' ? await allocateNetwork(container.id, net) : undefined, cleanup.defer(() => releaseNetwork(network)), then if (network) await ipAsync(`link add ${network.hostVeth} type veth peer name eth0 netns ${child.pid}`, `link set ${network.hostVeth} master ${BRIDGE} up`, and, for a container reaching its own -p port, `link set ${network.hostVeth} type bridge_slave hairpin on`); give writeEtcFiles address: network?.address, and tellChild(child, { network }) says the address.',
      'In child(): const { network } = waitForParent<{ network?: Network }>(), then linkUp(\'lo\'), and if (network): addAddress(\'eth0\', network.address, network.prefix), linkUp(\'eth0\') and addDefaultRoute(network.gateway). The order matters: eth0 does not exist before the parent says so, and the route needs eth0 up with its address.',
    ],
  },
  '09-userns': {
    title: 'user namespace: container root is not host root',
    man: ['user_namespaces(7)', 'unshare(1)', 'setgroups(2)', 'setresuid(2)', 'capabilities(7)'],
    hints: [
      'Three TODOs: a flag in run(), the maps in run() once the child has started, the credentials in child() once the parent has had its say. The launcher (reexecChildInUserNamespace, shared/userns.ts) turns each CLONE_NEW* flag into an option of unshare(1); the maps are files in /proc/<pid>/ of the launcher, which is in the new user namespace already.',
      'The flag is CLONE_NEWUSER (shared/namespaces.ts). shared/userns.ts has writeIdMaps(pid, map), which writes setgroups (rootless), uid_map and gid_map; the map is idMapFor(), already in `map`, and the pid is child.pid!.',
      'In child(), after waitForParent(): if (!container.rootless) setgroups([]), then setresgid(0, 0, 0) and setresuid(0, 0, 0), group first, as runtimes do: a process that has dropped to a uid without privilege can no longer change its group.',
    ],
  },
  '10-security': {
    title: 'capabilities, no_new_privs and seccomp',
    man: ['capabilities(7)', 'prctl(2)', 'capset(2)', 'seccomp(2)', 'proc(5)'],
    hints: [
      'The TODOs are all in child() and its two helpers, in the order the kernel needs: masks (mounts, while we may still mount), capabilities, no_new_privs, the filter. steps/10-security/policy.ts has the tables; shared/capabilities.ts and shared/seccomp.ts the calls.',
      'maskPath: statSync(path).isDirectory() ? mount(\'tmpfs\', path, \'tmpfs\', MS_RDONLY) : mount(\'/dev/null\', path, null, MS_BIND). readOnlyPath: mount(path, path, null, MS_BIND | MS_REC), then mount(null, path, null, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC).',
      'for (const bit of kernelCapabilityBits()) if (!container.capabilities.includes(CAPABILITIES[bit])) prctl(PR_CAPBSET_DROP, bit); prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL); capset({ effective: container.capabilities, permitted: container.capabilities, inheritable: [] }); if (container.noNewPrivileges) prctl(PR_SET_NO_NEW_PRIVS, 1); if (filter && container.noNewPrivileges) seccomp(filter). The bounding set goes before capset: dropping from it needs CAP_SETPCAP.',
    ],
  },

}

/** The homework problems, by short name (npm run homework -- p1a). */
export const homework: Record<string, Homework & { slug: string }> = {
  p1a: {
    slug: 'p1a-proc',
    title: 'proc for a new PID namespace, without touching the host',
    file: 'index.ts',
    man: ['mount_namespaces(7)', 'pid_namespaces(7)', 'proc(5)', 'lsns(8)', 'findmnt(8)'],
    hints: [
      'Propagation is in the optional fields of /proc/self/mountinfo, between the mount options and the " - ": shared:N, master:N, propagate_from:N, unbindable. None of them means private.',
      'A proc filesystem shows the PID namespace of whoever mounts it, so the child mounts it (after CLONE_NEWPID | CLONE_NEWNS). Before that: mount(null, \'/\', null, MS_REC | MS_PRIVATE), or MS_SLAVE to still receive the host\'s new mounts.',
      'lsns reads /proc, always /proc: with proc mounted elsewhere it still lists the host\'s processes.',
    ],
    person: 'answers.md: how the propagation was read, and why lsns lists the host\'s namespaces with proc elsewhere',
  },
  p1b: {
    slug: 'p1b-pivot-init',
    title: 'a bind-mounted, writable root with pivot_root, and an init that starts a shell',
    file: 'index.ts',
    man: ['pivot_root(2)', 'mount(2)', 'mount_namespaces(7)', 'sh(1)'],
    hints: [
      'pivotInto() is step 05\'s, with the root made from a copy of the image (already done by the parent): bind it onto itself, pivot_root, detach the old root.',
      'The init is the child itself, after the mounts: it does not exec. It starts the shell with child_process.spawnSync(\'/bin/sh\', [\'-i\'], { stdio: \'inherit\', env: { ...process.env, PS1: prompt } }).',
      'The init waits for the shell and exits with its status. The space question: du -sh the image and one container\'s directory while two run.',
    ],
    person: 'answers.md: (i), and the reasoning of (iv) (a keyword check only sees that it says twice the image)',
  },
  'p1b-userns': {
    slug: 'p1b-userns',
    title: 'a user namespace for P1B\'s container: uid and gid maps by the parent, setgroups',
    file: 'index.ts',
    man: ['user_namespaces(7)', 'unshare(1)', 'setgroups(2)', 'setresuid(2)', 'proc(5)'],
    hints: [
      'Three TODOs: a flag in run(), the maps in run() once the child has started, the credentials in child() once the parent has had its say. reexecChildInUserNamespace (shared/userns.ts) turns each CLONE_NEW* flag into an option of unshare(1); the maps are files in /proc/<pid>/ of the launcher, child.pid, which is in the new user namespace already.',
      'The flag is CLONE_NEWUSER (shared/namespaces.ts). shared/userns.ts has writeIdMaps(pid, map): rootless it writes `deny` to setgroups first, then uid_map and gid_map; the map is idMapFor(), already in `map`.',
      'In child(), after waitForParent(): if (!container.rootless) setgroups([]), then setresgid(0, 0, 0) and setresuid(0, 0, 0), the group first, as runtimes do.',
    ],
    person: '',
  },
  p2: {
    slug: 'p2-propagation',
    title: 'the mount propagation puzzle',
    file: 'prediction.txt',
    man: ['mount_namespaces(7)', 'mount(8)'],
    hints: [
      'After `mount --make-shared smt`, the mount at smt has a peer group. A bind mount of a shared mount joins that peer group.',
      'A mount made under one member of a peer group is copied under every other member, once (the copies do not propagate again).',
      '`mount --move tmp smt/1` puts the bind (a peer of smt) under smt: the copy goes under the moved mount itself, at smt/1/1.',
    ],
    person: 'prediction.txt: the explanation under its last heading',
  },
  p3: {
    slug: 'p3-layers',
    title: 'an image of layers: add a big file, delete it, and measure',
    file: 'index.ts',
    man: ['overlayfs: Documentation/filesystems/overlayfs.rst (Multiple lower layers)', 'mount(2)', 'tar(1)', 'sha256sum(1)', 'OCI image spec: layer.md, config.md'],
    hints: [
      'Each instruction gets its own overlay: the layers so far as lowerdirs, an empty upper. lowerdir lists the top layer first, and `layers` lists them bottom first, as image.json does: layers.map(layerDir).reverse().join(\':\').',
      'mount(\'overlay\', merged, \'overlay\', 0, `lowerdir=${…},upperdir=${upper},workdir=${work}`). After umount2(merged), upper holds only what the instruction changed: that is the layer. layers.push(storeLayer(upper)) puts it on top.',
      'storeLayer: const hex = layerDigest(dir); the target is join(layersDir, hex). If it exists, the layer is there already (drop dir unless copying); else renameSync(dir, target), or with copy, cp -a dir/. to a temporary name, then rename it into place. Return `sha256:${hex}`. Deleting /big in a later layer only adds a whiteout: the bytes stay in the layer below.',
    ],
    person: 'answers.md: why the image does not shrink, what diff\'s letters mean, and the export against the layers',
  },
  p4: {
    slug: 'p4-lsns',
    title: 'a small lsns for one PID',
    file: 'index.ts',
    man: ['lsns(8)', 'namespaces(7)', 'readlink(2)', 'proc(5)', 'unshare(1)'],
    hints: [
      'Each namespace of a process is a symbolic link in /proc/PID/ns; its target reads like `uts:[4026531838]`, and the number is the namespace\'s inode.',
      'readdirSync(`/proc/${pid}/ns`), readlinkSync of each; leave out pid_for_children and time_for_children (they are the children\'s).',
      'A PID that does not exist: one line on stderr, a non-zero exit code (UsageError does both).',
    ],
    person: '',
  },
  p5: {
    slug: 'p5-config',
    title: 'memory, CPU percent and an extra mount point, in one typed config',
    file: 'index.ts',
    man: ['cgroups(7)', 'mount(2)', 'mount_namespaces(7)'],
    hints: [
      'parseConfig() turns the options into a Config, or throws UsageError; the Config travels to the child inside the JSON, like every other field.',
      'CPU percent of one CPU is a quota per period: 25% is 25 ms of CPU per 100 ms, the same as Limits.cpus = 0.25.',
      'The bind mount has to be made before pivot_root, while the host\'s path can still be named: mkdir the target inside merged/ (it lands in upper/, not in the image), then mount(source, target, null, MS_BIND | MS_REC): recursive, so what is mounted under the source comes along.',
    ],
    person: '',
  },
  p6a: {
    slug: 'p6a-net',
    title: 'two containers talking over the network',
    file: 'index.ts',
    man: ['network_namespaces(7)', 'nc(1)'],
    hints: [
      'Step 08 gives each container an address on the cfs0 bridge; the listener prints its own (hostname -i or ip -4 addr show eth0) so the talker knows where to go.',
      'Start the listener with `nc -l -p PORT`, read its address from its output, then start the second container with `echo MESSAGE | nc ADDRESS PORT`.',
      'Wait for both runs; both containers must be gone and nothing left behind (their parents release addresses and veths).',
    ],
    person: '',
  },
  p6b: {
    slug: 'p6b-fifo',
    title: 'a FIFO between two containers',
    file: 'index.ts',
    man: ['fifo(7)', 'mkfifo(3)', 'pipe(7)'],
    hints: [
      'A namespace hides names (paths), not files that are already open: an open file descriptor goes through exec and into any namespace.',
      'mkfifo in the given directory on the host; then open it as the reader container\'s stdin and as the writer container\'s stdout (a shell redirection does the open).',
      'Opening a FIFO blocks until the other end is opened too, so start both runs before awaiting either. Remove the FIFO at the end.',
    ],
    person: 'answers.md: the order of opening, why CLONE_NEWIPC would not stop this FIFO, a FIFO through a shared mount',
  },
  p6c: {
    slug: 'p6c-build',
    title: 'a tiny Containerfile: one overlay layer on top of an image',
    file: 'index.ts',
    man: ['mount(2)', 'overlayfs: Documentation/filesystems/overlayfs.rst', 'chroot(2)'],
    hints: [
      'The build runs in its own mount namespace (the skeleton re-runs itself with CLONE_NEWNS), so the overlay vanishes with it.',
      'lowerdir = the FROM image, upperdir = <out>/diff, workdir = <out>/work, mounted on <out>/merged. COPY writes into merged; RUN runs `chroot <merged> /bin/sh -c <command>`.',
      'Everything that changes in merged lands in diff; a deletion leaves a whiteout (a 0,0 character device). Unmount before you finish.',
    ],
    person: '',
  },
}

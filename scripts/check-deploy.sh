#!/usr/bin/env bash
# Validates deploy/ without running it (no Docker engine or cluster in CI): the files' syntax
# and schemas, the Prometheus config, rules and their unit tests, and the promises the
# validators cannot see (read-only root, uid 1000, probes, WALs on persistent volumes, ...).
#
#   scripts/check-deploy.sh             check the repository's deploy/
#   scripts/check-deploy.sh DIR         check a copy (how each check was shown to fail)
#   scripts/check-deploy.sh --sync      rewrite the alerts.yml copy in the k8s ConfigMap
#
# Prints one line per check; exits 1 if any failed, with its output below its line. Needs
# python3 (the validators go into .venv-deploy, made once) and promtool (Debian's prometheus
# package, installed when missing and root).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-deploy"
# The versions these files were validated with; a change of pins rebuilds the venv.
pins="check-jsonschema==0.39.0 kubernetes-validate==1.37.0 yamllint==1.38.0"

sync=0
deploy="$root/deploy"
for arg in "$@"; do
  case "$arg" in
    --sync) sync=1 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "check-deploy: unknown option $arg" >&2; exit 64 ;;
    *) deploy="$(cd "$arg" && pwd)" || exit 64 ;;
  esac
done

started=$(date +%s%N)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- tools -------------------------------------------------------------------------------
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
  echo "setup: creating $venv ($pins)"
  # shellcheck disable=SC2086  # $pins is a list of requirements
  if ! { python3 -m venv --clear "$venv" \
         && "$venv/bin/pip" install --quiet --disable-pip-version-check $pins; } > "$work/setup.log" 2>&1; then
    echo "FAIL setup: could not create $venv:"; sed 's/^/    /' "$work/setup.log"; exit 1
  fi
  echo "$pins" > "$venv/.pins"
fi

if ! command -v promtool > /dev/null; then
  install_cmd="apt-get install -y --no-install-recommends prometheus"
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing promtool ($install_cmd)"
    # Only promtool is used. The package's own server stays stopped where policy-rc.d (as in
    # containers and CI) says so.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive $install_cmd -qq; } > "$work/setup.log" 2>&1; then
      echo "FAIL setup: $install_cmd failed:"; sed 's/^/    /' "$work/setup.log"; exit 1
    fi
  else
    echo "FAIL setup: promtool is missing; install it with: sudo $install_cmd"
    exit 1
  fi
fi

py="$venv/bin/python"

# --- the checks that read our promises (Python with PyYAML, from the venv) -----------------
# invariants SECTION DEPLOY_DIR: prints one line per problem and exits 1, or prints a summary.
invariants() {
  "$py" - "$@" <<'PY'
import glob, os, re, sys
import yaml

section, deploy = sys.argv[1], sys.argv[2]
problems = []
def bad(message): problems.append(message)

def load(path):
    with open(path) as f:
        return yaml.safe_load(f)

def seconds(value):
    """Compose durations ('60s', '1m30s') and plain numbers."""
    if isinstance(value, (int, float)):
        return float(value)
    total, rest = 0.0, str(value)
    for amount, unit in re.findall(r'([0-9.]+)(h|ms|m|s|us)', rest):
        total += float(amount) * {'h': 3600, 'm': 60, 's': 1, 'ms': 1e-3, 'us': 1e-6}[unit]
    return total

def under(path, mount):
    return path == mount or path.startswith(mount.rstrip('/') + '/')

def deepest_mount(path, mounts):
    candidates = [m for m in mounts if under(path, m)]
    return max(candidates, key=len) if candidates else None

def service_of(command):
    text = ' '.join(command or [])
    for service in ('signaldb-acceptor', 'signaldb-writer'):
        if service in text:
            return service
    return None

# Settings each service must have pointing at persistent storage, and its shutdown bound.
DATA_VARS = {'signaldb-acceptor': ['ACCEPTOR_WAL_DIR'], 'signaldb-writer': ['WRITER_WAL_DIR', 'WRITER_STORE']}
WAL_VAR = {'signaldb-acceptor': 'ACCEPTOR_WAL_DIR', 'signaldb-writer': 'WRITER_WAL_DIR'}
LISTEN_VARS = {'signaldb-acceptor': ['ACCEPTOR_HTTP_ADDR', 'ACCEPTOR_GRPC_ADDR', 'ACCEPTOR_ADMIN_ADDR'],
               'signaldb-writer': ['WRITER_GRPC_ADDR', 'WRITER_ADMIN_ADDR']}
ADMIN_VAR = {'signaldb-acceptor': 'ACCEPTOR_ADMIN_ADDR', 'signaldb-writer': 'WRITER_ADMIN_ADDR'}
# The services get up to 10 s after their shutdown timeout to end (docs/WRITER.md, Shutdown).
AFTER_TIMEOUT = 10
# The mount point WALDiskSpaceHigh selects (disk_used_bytes{mountpoint="/data/wal"}).
ALERT_MOUNTPOINT = '/data/wal'
# What the startup probes must allow for a long replay.
STARTUP_BUDGET = 30 * 60

def data_path(var, value):
    return value[len('sqlite:'):] if var == 'WRITER_STORE' else value

def shutdown_bound(service, env):
    if service == 'signaldb-acceptor':
        return float(env.get('ACCEPTOR_SHUTDOWN_TIMEOUT_SECONDS', 30)) + float(env.get('ACCEPTOR_SHUTDOWN_DRAIN_SECONDS', 0))
    return float(env.get('WRITER_SHUTDOWN_TIMEOUT_SECONDS', 30))

def check_env(where, service, env, mounts, persistent):
    """env: name -> value; mounts: mount path -> volume name; persistent: volume names that outlive the container."""
    for var in DATA_VARS[service]:
        if var not in env:
            bad(f'{where}: {var} is not set (the default is a relative path inside the container)')
            continue
        path = data_path(var, str(env[var]))
        if var == 'WRITER_STORE' and not str(env[var]).startswith('sqlite:/'):
            bad(f'{where}: WRITER_STORE={env[var]} is not sqlite:<absolute path>')
        target = path if var.endswith('_WAL_DIR') else os.path.dirname(path)
        mount = deepest_mount(target, mounts)
        if mount is None:
            bad(f'{where}: {var}={env[var]} is not on any mounted volume (it would be lost with the container)')
        elif mounts[mount] not in persistent:
            bad(f'{where}: {var}={env[var]} is on volume {mounts[mount]!r}, which is not persistent')
        if var == WAL_VAR[service] and mount != ALERT_MOUNTPOINT:
            bad(f'{where}: {var} is on mount {mount}, not {ALERT_MOUNTPOINT} (WALDiskSpaceHigh selects mountpoint="{ALERT_MOUNTPOINT}")')
    for var in LISTEN_VARS[service]:
        if not str(env.get(var, '')).startswith('0.0.0.0:'):
            bad(f'{where}: {var}={env.get(var)!r} does not bind 0.0.0.0 (unreachable from outside the container)')

# ---------------------------------------------------------------------------------------
if section == 'k8s':
    files = sorted(glob.glob(os.path.join(deploy, 'k8s', '*.yaml')))
    pods = []
    for path in files:
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            kind, name = doc.get('kind'), doc.get('metadata', {}).get('name')
            spec = doc.get('spec', {})
            if kind in ('StatefulSet', 'Deployment', 'DaemonSet', 'ReplicaSet', 'Job'):
                pods.append((f'{os.path.basename(path)} {kind}/{name}', spec.get('template', {}).get('spec', {}), spec))
            elif kind == 'CronJob':
                pods.append((f'{os.path.basename(path)} {kind}/{name}', spec['jobTemplate']['spec']['template']['spec'], {}))
            elif kind == 'Pod':
                pods.append((f'{os.path.basename(path)} {kind}/{name}', spec, {}))
            if kind == 'Deployment' and service_of([str(c.get('command')) for c in spec['template']['spec'].get('containers', [])]):
                bad(f'{os.path.basename(path)} Deployment/{name}: the services run as StatefulSets (a stable PVC per pod)')
    if not pods:
        bad('no workloads found in k8s/*.yaml')
    containers_seen = 0
    for where, pod, owner in pods:
        psc = pod.get('securityContext') or {}
        if psc.get('fsGroup') != 1000:
            bad(f'{where}: pod securityContext.fsGroup is {psc.get("fsGroup")}, not 1000')
        if psc.get('fsGroupChangePolicy') != 'OnRootMismatch':
            bad(f'{where}: pod securityContext.fsGroupChangePolicy is not OnRootMismatch')
        claims = {t['metadata']['name'] for t in owner.get('volumeClaimTemplates', [])}
        persistent = claims | {v['name'] for v in pod.get('volumes', []) if 'persistentVolumeClaim' in v}
        grace = pod.get('terminationGracePeriodSeconds', 30)
        for c in pod.get('initContainers', []) + pod.get('containers', []):
            containers_seen += 1
            cwhere = f'{where} container {c.get("name")}'
            sc = c.get('securityContext') or {}
            def effective(key):
                return sc.get(key, psc.get(key))
            if sc.get('readOnlyRootFilesystem') is not True:
                bad(f'{cwhere}: readOnlyRootFilesystem is not true')
            if sc.get('allowPrivilegeEscalation') is not False:
                bad(f'{cwhere}: allowPrivilegeEscalation is not false')
            if 'ALL' not in ((sc.get('capabilities') or {}).get('drop') or []):
                bad(f'{cwhere}: capabilities do not drop ALL')
            if effective('runAsUser') != 1000 or effective('runAsGroup') != 1000:
                bad(f'{cwhere}: runs as {effective("runAsUser")}:{effective("runAsGroup")}, not 1000:1000')
            if effective('runAsNonRoot') is not True:
                bad(f'{cwhere}: runAsNonRoot is not true')
            if (effective('seccompProfile') or {}).get('type') != 'RuntimeDefault':
                bad(f'{cwhere}: seccompProfile is not RuntimeDefault')
            service = service_of(c.get('command') or c.get('args'))
            if service is None:
                continue
            env = {e['name']: e.get('value') for e in c.get('env', []) if 'value' in e}
            mounts = {m['mountPath']: m['name'] for m in c.get('volumeMounts', [])}
            check_env(cwhere, service, env, mounts, persistent)
            ports = {p.get('name'): p['containerPort'] for p in c.get('ports', [])}
            admin_port = int(str(env.get(ADMIN_VAR[service], ':0')).rsplit(':', 1)[1])
            for var in LISTEN_VARS[service]:
                port = int(str(env.get(var, ':0')).rsplit(':', 1)[1])
                if port not in ports.values():
                    bad(f'{cwhere}: {var} port {port} is not a declared containerPort')
            for probe, path in (('livenessProbe', '/livez'), ('readinessProbe', '/readyz'), ('startupProbe', None)):
                spec = c.get(probe)
                if not spec:
                    bad(f'{cwhere}: no {probe}')
                    continue
                get = spec.get('httpGet') or {}
                port = ports.get(get.get('port'), get.get('port'))
                if port != admin_port:
                    bad(f'{cwhere}: {probe} does not probe the admin port {admin_port}')
                if path and get.get('path') != path:
                    bad(f'{cwhere}: {probe} path is {get.get("path")}, not {path}')
                if probe == 'startupProbe':
                    budget = spec.get('periodSeconds', 10) * spec.get('failureThreshold', 3)
                    if budget < STARTUP_BUDGET:
                        bad(f'{cwhere}: startupProbe allows {budget} s, less than {STARTUP_BUDGET} s for a long replay')
            bound = shutdown_bound(service, env) + AFTER_TIMEOUT
            if grace <= bound:
                bad(f'{where}: terminationGracePeriodSeconds {grace} is not beyond the shutdown bound ({bound:.0f} s)')
            if 'limits' not in (c.get('resources') or {}) or 'memory' not in c['resources']['limits']:
                bad(f'{cwhere}: no memory limit')
    summary = f'{containers_seen} containers in {len(pods)} workloads'

# ---------------------------------------------------------------------------------------
elif section == 'compose':
    compose = load(os.path.join(deploy, 'docker', 'compose.yaml'))
    declared = set((compose.get('volumes') or {}).keys())
    services = compose.get('services') or {}
    ours = {n: s for n, s in services.items() if service_of(s.get('command') if isinstance(s.get('command'), list) else [str(s.get('command'))])}
    if set(ours) != {'signaldb-acceptor', 'signaldb-writer'}:
        bad(f'compose services running signaldb: {sorted(ours)}, expected signaldb-acceptor and signaldb-writer')
    for name, svc in ours.items():
        where = f'compose.yaml {name}'
        service = service_of(svc['command'])
        if service != name:
            bad(f'{where}: runs {service}')
        if svc.get('read_only') is not True:
            bad(f'{where}: read_only is not true')
        if str(svc.get('user')) != '1000:1000':
            bad(f'{where}: user is {svc.get("user")!r}, not "1000:1000"')
        if 'no-new-privileges:true' not in (svc.get('security_opt') or []):
            bad(f'{where}: security_opt lacks no-new-privileges:true')
        if 'ALL' not in (svc.get('cap_drop') or []):
            bad(f'{where}: cap_drop lacks ALL')
        if svc.get('tmpfs'):
            bad(f'{where}: has tmpfs mounts, but the services write only to their volumes')
        env = svc.get('environment') or {}
        if isinstance(env, list):
            env = dict(item.split('=', 1) for item in env)
        mounts = {}
        for volume in svc.get('volumes') or []:
            if isinstance(volume, str):
                source, target = volume.split(':')[:2]
            else:
                source, target = volume.get('source'), volume.get('target')
            mounts[target] = source
        check_env(where, service, env, mounts, declared)
        bound = shutdown_bound(service, env) + AFTER_TIMEOUT
        grace = seconds(svc.get('stop_grace_period', '10s'))
        if grace <= bound:
            bad(f'{where}: stop_grace_period {svc.get("stop_grace_period", "10s (default)")} is not beyond the shutdown bound ({bound:.0f} s)')
        if svc.get('restart') not in ('unless-stopped', 'always', 'on-failure'):
            bad(f'{where}: no restart policy (a failed WAL ends the process with status 1 for its supervisor to restart)')
        exposed = {str(p) for p in svc.get('expose') or []}
        admin_port = str(env.get(ADMIN_VAR[service], ':')).rsplit(':', 1)[1]
        if admin_port not in exposed:
            bad(f'{where}: the admin port {admin_port} is not exposed to the compose network (Prometheus scrapes it)')
        for port in svc.get('ports') or []:
            if admin_port in str(port).split(':')[-1:]:
                bad(f'{where}: the admin port {admin_port} is published on the host')
    acceptor = ours.get('signaldb-acceptor', {})
    env = acceptor.get('environment') or {}
    if str(env.get('ACCEPTOR_WRITER_ADDR', '')).split(':')[0] != 'signaldb-writer':
        bad('compose.yaml signaldb-acceptor: ACCEPTOR_WRITER_ADDR does not name the signaldb-writer service')
    published = {str(p).split(':')[-1] for p in acceptor.get('ports') or []}
    for port in ('4317', '4318'):
        if port not in published:
            bad(f'compose.yaml signaldb-acceptor: OTLP port {port} is not published')
    summary = f'{len(ours)} services'

# ---------------------------------------------------------------------------------------
elif section == 'dockerfile':
    text = open(os.path.join(deploy, 'docker', 'Dockerfile')).read()
    joined = re.sub(r'\\\n(\s*#[^\n]*\n)*', ' ', text)
    instructions = [l.strip() for l in joined.split('\n') if l.strip() and not l.strip().startswith('#')]
    args = dict(re.findall(r'^ARG (\w+)=(\S+)', '\n'.join(instructions), re.M))
    stages = [i for i, l in enumerate(instructions) if l.upper().startswith('FROM ')]
    if len(stages) < 2:
        bad('Dockerfile: not multi-stage')
    final = instructions[stages[-1]:] if stages else instructions
    images = [re.sub(r'\$\{(\w+)\}', lambda m: args.get(m.group(1), m.group(0)), instructions[i].split()[1]) for i in stages]
    codenames = {re.search(r'(bookworm|bullseye|trixie|jammy|noble)', image).group(1) if re.search(r'(bookworm|bullseye|trixie|jammy|noble)', image) else image for image in images}
    if len(codenames) != 1:
        bad(f'Dockerfile: stages are on different distributions ({", ".join(images)}): the binaries need the glibc and libraries they were built against')
    users = [l.split(None, 1)[1] for l in final if l.upper().startswith('USER ')]
    if not users or users[-1] not in ('1000:1000', '1000', 'signaldb', 'signaldb:signaldb'):
        bad(f'Dockerfile: the final stage runs as {users[-1] if users else "root"}, not 1000:1000')
    volumes = []
    for l in final:
        if l.upper().startswith('VOLUME '):
            body = l.split(None, 1)[1]
            volumes += re.findall(r'"([^"]+)"', body) if body.startswith('[') else body.split()
    env = {}
    for l in final:
        if l.upper().startswith('ENV '):
            env.update(dict(re.findall(r'(\w+)=(\S+)', l[4:])))
    for service in ('signaldb-acceptor', 'signaldb-writer'):
        check_env('Dockerfile', service, env, {v: v for v in volumes}, set(volumes))
    final_text = '\n'.join(final)
    for volume in volumes:
        if not re.search(r'install -d (?=[^\n]*-o 1000)(?=[^\n]*-g 1000)(?=[^\n]*-m 0700)[^\n]*' + re.escape(volume) + r'(\s|$)', final_text):
            bad(f'Dockerfile: {volume} is not created 1000:1000 mode 0700 (install -d -o 1000 -g 1000 -m 0700 ...)')
    if '--static-swift-stdlib' not in text and 'swift_static' not in text:
        bad('Dockerfile: the Swift runtime is neither linked statically nor copied')
    summary = f'{len(stages)} stages, volumes {" ".join(volumes)}'

# ---------------------------------------------------------------------------------------
elif section == 'alerts':
    rules = [r for g in load(os.path.join(deploy, 'prometheus', 'alerts.yml'))['groups'] for r in g['rules'] if 'alert' in r]
    tests = load(os.path.join(deploy, 'prometheus', 'alerts_test.yml'))['tests']
    fires, silent = {}, {}
    for test in tests:
        for case in test.get('alert_rule_test') or []:
            target = fires if case.get('exp_alerts') else silent
            target.setdefault(case['alertname'], []).append(case)
    # The guide's two rules, kept as the guide has them.
    guide = {'WALDiskSpaceHigh': '(disk_used_bytes{mountpoint="/data/wal"} / disk_size_bytes{mountpoint="/data/wal"}) > 0.85',
             'WALFlushLatencyHigh': 'wal_flush_duration_seconds > 1.0'}
    names = [r['alert'] for r in rules]
    for name, expr in guide.items():
        rule = next((r for r in rules if r['alert'] == name), None)
        if rule is None or rule['expr'].strip() != expr:
            bad(f'alerts.yml: {name} is missing or its expr differs from the guide\'s {expr!r}')
    for rule in rules:
        name, expr = rule['alert'], rule['expr'].strip()
        if not re.fullmatch(r'.*\S\s+(>|==)\s+-?[0-9]+(\.[0-9]+)?', expr, re.S):
            bad(f'alerts.yml: {name}: expr does not end in one "> N" or "== N" comparison: {expr!r}')
        elif re.search(r'(>|<|==|!=)', re.sub(r'\s+(>|==)\s+-?[0-9.]+$', '', expr).replace('=~', '').replace('!~', '').replace('="', '').replace('!="', '')):
            bad(f'alerts.yml: {name}: a comparison other than the last one (a test strips only the last): {expr!r}')
        if names.count(name) > 1:
            bad(f'alerts.yml: {name} is defined twice')
        if (rule.get('labels') or {}).get('severity') not in ('warning', 'critical'):
            bad(f'alerts.yml: {name}: severity is not warning or critical')
        annotations = rule.get('annotations') or {}
        for key in ('summary', 'description', 'runbook_url'):
            if not annotations.get(key):
                bad(f'alerts.yml: {name}: no {key} annotation')
        if annotations.get('runbook_url') != 'docs/operations/wal-persistence.md#troubleshooting':
            bad(f'alerts.yml: {name}: runbook_url is not docs/operations/wal-persistence.md#troubleshooting')
        if name not in fires:
            bad(f'alerts_test.yml: no case where {name} fires')
        else:
            for case in fires[name]:
                for alert in case['exp_alerts']:
                    missing = set(annotations) - set(alert.get('exp_annotations') or {})
                    if missing or not alert.get('exp_labels'):
                        bad(f'alerts_test.yml: a firing case of {name} does not expect its labels and annotations {sorted(missing)}')
        if name not in silent:
            bad(f'alerts_test.yml: no case where {name} stays silent')
    summary = f'{len(rules)} alerts, each with firing and silent cases'

# ---------------------------------------------------------------------------------------
elif section in ('configmap', 'sync'):
    path = os.path.join(deploy, 'k8s', 'prometheus-config.yaml')
    source = open(os.path.join(deploy, 'prometheus', 'alerts.yml')).read()
    if section == 'sync':
        lines = open(path).read().split('\n')
        start = lines.index('  alerts.yml: |') + 1
        end = start
        while end < len(lines) and (lines[end] == '' or lines[end].startswith('    ')):
            end += 1
        block = [('    ' + l) if l else '' for l in source.rstrip('\n').split('\n')]
        lines[start:end] = block + ([''] if end == len(lines) else [])
        open(path, 'w').write('\n'.join(lines).rstrip('\n') + '\n')
        print(f'rewrote the alerts.yml copy in {path}')
        sys.exit(0)
    data = load(path)['data']
    if data.get('alerts.yml') != source:
        bad('k8s/prometheus-config.yaml: its alerts.yml differs from prometheus/alerts.yml (run scripts/check-deploy.sh --sync)')
    if 'alerts.yml' not in (yaml.safe_load(data.get('prometheus.yml', '')) or {}).get('rule_files', []):
        bad('k8s/prometheus-config.yaml: prometheus.yml does not load alerts.yml')
    summary = 'alerts.yml copy matches'

# ---------------------------------------------------------------------------------------
elif section == 'scrape':
    for path in (os.path.join(deploy, 'docker', 'prometheus.yml'), None):
        if path is None:
            config = yaml.safe_load(load(os.path.join(deploy, 'k8s', 'prometheus-config.yaml'))['data']['prometheus.yml'])
            where = 'k8s/prometheus-config.yaml'
        else:
            config, where = load(path), 'docker/prometheus.yml'
        jobs = {j['job_name']: j for j in config.get('scrape_configs', [])}
        for job in ('signaldb-acceptor', 'signaldb-writer'):
            if job not in jobs:
                bad(f'{where}: no scrape job {job} (the alerts select up{{job=~"signaldb-.*"}})')
            elif jobs[job].get('metrics_path', '/metrics') != '/metrics':
                bad(f'{where}: job {job} does not scrape /metrics')
    # compose's Prometheus: the config and the rules mounted where the config's rule_files
    # point once resolved in the container (/etc/prometheus).
    import posixpath
    compose = load(os.path.join(deploy, 'docker', 'compose.yaml'))
    prom = next((s for s in (compose.get('services') or {}).values() if 'prom/prometheus' in str(s.get('image'))), None)
    if prom is None:
        bad('compose.yaml: no prom/prometheus service')
    else:
        mounts = {}
        for volume in prom.get('volumes') or []:
            parts = volume.split(':') if isinstance(volume, str) else [volume.get('source'), volume.get('target')]
            mounts[parts[1]] = posixpath.normpath(posixpath.join('docker', parts[0]))
        if mounts.get('/etc/prometheus/prometheus.yml') != 'docker/prometheus.yml':
            bad('compose.yaml prometheus: docker/prometheus.yml is not mounted at /etc/prometheus/prometheus.yml')
        for rule_file in load(os.path.join(deploy, 'docker', 'prometheus.yml')).get('rule_files', []):
            in_container = posixpath.normpath(posixpath.join('/etc/prometheus', rule_file))
            in_repo = posixpath.normpath(posixpath.join('docker', rule_file))
            if mounts.get(in_container) != in_repo:
                bad(f'compose.yaml prometheus: rule file {rule_file} is {in_container} in the container, where {in_repo} is not mounted')
    summary = 'both jobs in both configs; compose mounts the rules it reads'

else:
    sys.exit(f'unknown section {section}')

for problem in problems:
    print(problem)
if problems:
    sys.exit(1)
print(summary)
PY
}

if [ "$sync" = 1 ]; then
  invariants sync "$deploy"
  exit $?
fi

# --- runner ------------------------------------------------------------------------------
failures=0
# check NAME COMMAND...: one line, "ok" or "FAIL", the command's output below a failure and
# its last line (a summary) after an ok.
check() {
  local name="$1"; shift
  local out="$work/out" t0 t1 rc
  t0=$(date +%s%N)
  "$@" > "$out" 2>&1
  rc=$?
  t1=$(date +%s%N)
  local ms=$(( (t1 - t0) / 1000000 ))
  if [ "$rc" = 0 ]; then
    printf 'ok    %-34s %6d ms  %s\n' "$name" "$ms" "$(grep -v '^\s*$' "$out" | tail -n 1 | cut -c1-70)"
  else
    printf 'FAIL  %-34s %6d ms  (exit %d)\n' "$name" "$ms" "$rc"
    sed 's/^/      /' "$out" | head -n 60
    failures=$((failures + 1))
  fi
}

# The ConfigMap's prometheus.yml names alerts.yml beside it, as the pod mounts both keys in
# /etc/prometheus: lay them out the same way (promtool resolves rule_files against the
# config's directory).
stage_k8s_prometheus() {
  mkdir -p "$work/k8s" && "$py" - "$deploy/k8s/prometheus-config.yaml" "$work/k8s" <<'PY' && promtool check config "$work/k8s/prometheus.yml"
import sys, yaml
data = yaml.safe_load(open(sys.argv[1]))['data']
for key, text in data.items():
    open(f'{sys.argv[2]}/{key}', 'w').write(text)
PY
}

run_yamllint() {
  "$venv/bin/yamllint" --strict -c "$deploy/.yamllint.yml" "$deploy" || return
  echo "$(find "$deploy" -name '*.yml' -o -name '*.yaml' | wc -l) files clean"
}
run_kubernetes_validate() {
  local files=("$deploy"/k8s/*.yaml)
  local out="$work/kubernetes-validate"
  if ! "$venv/bin/kubernetes-validate" --strict "${files[@]}" > "$out" 2>&1 || ! grep -q passed "$out"; then
    grep -v ' passed for resource ' "$out"; return 1
  fi
  echo "${#files[@]} files, $(grep -c passed "$out") resources valid for Kubernetes $(grep -o 'against version [0-9.]*' "$out" | head -n 1 | cut -d' ' -f3)"
}

check "yamllint deploy/"                    run_yamllint
check "compose schema (compose-spec)"       "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$deploy/docker/compose.yaml"
check "kubernetes-validate --strict"        run_kubernetes_validate
check "promtool check config (compose)"     promtool check config "$deploy/docker/prometheus.yml"
check "promtool check config (k8s)"         stage_k8s_prometheus
check "promtool check rules"                promtool check rules "$deploy/prometheus/alerts.yml"
check "promtool test rules"                 promtool test rules "$deploy/prometheus/alerts_test.yml"
check "invariants: k8s workloads"           invariants k8s "$deploy"
check "invariants: compose services"        invariants compose "$deploy"
check "invariants: Dockerfile"              invariants dockerfile "$deploy"
check "invariants: alerts and their tests"  invariants alerts "$deploy"
check "invariants: scrape jobs"             invariants scrape "$deploy"
check "invariants: k8s alerts.yml copy"     invariants configmap "$deploy"

elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
if [ "$failures" -gt 0 ]; then
  echo "check-deploy: $failures check(s) failed (${elapsed} ms)"
  exit 1
fi
echo "check-deploy: all checks passed (${elapsed} ms)"

# --- body (backend/ml/cloud/startup.sh); the variables above are filled in per VM ---
# Runs as the VM's startup script: fetch the code, install the pinned torch (CUDA build) and the
# project, wait for the GPU and run a CUDA kernel on it, train (or resume from the last
# checkpoint in Cloud Storage), sync the run directory while training and at the end, write the
# completion marker, delete this VM. No credential is ever written: Cloud Storage and Compute
# Engine are reached with the VM's service account.
set -uo pipefail

RUN_URL="gs://${BUCKET}/runs/${RUN_ID}"
RUNS_DIR="${WORK_DIR}/runs"
RUN_DIR="${RUNS_DIR}/${RUN_ID}"
CODE_DIR="${WORK_DIR}/code"
LOG_FILE="${WORK_DIR}/startup-${INSTANCE}.log"
LOG_URL="${RUN_URL}/cloud/${INSTANCE}.log"
# Exists once the earlier run directory was downloaded completely: only then may an upload
# remove objects that are missing locally (a partial copy must never delete the only one).
DOWNLOADED_FLAG="${WORK_DIR}/run-download.complete"
# Written by the watcher when the metadata server announces a preemption.
PREEMPTED_FLAG="${WORK_DIR}/preempted"
METADATA="http://${GCE_METADATA_HOST:-metadata.google.internal}/computeMetadata/v1/instance"
METADATA_URL="${METADATA}/preempted"
# What the GPU check found (device, capability, torch and CUDA versions, matmul error); the
# completion marker carries it.
GPU_REPORT="${WORK_DIR}/gpu-check.json"
STATUS=failed
EXIT_CODE=1
FAILURE=""
STEP=start          # the step running now, named in a failed marker
AGENT_READY=0       # 1 once the code (and with it the agent) is unpacked
CHILD=""
mkdir -p "${WORK_DIR}" && cd "${WORK_DIR}" || exit 1
rm -f "${DOWNLOADED_FLAG}" "${PREEMPTED_FLAG}" "${GPU_REPORT}"
exec > >(tee -a "${LOG_FILE}") 2>&1

say() { echo "[media-bias] $(date -u +%H:%M:%S) $*"; }
agent() { (cd "${CODE_DIR}" && "${PYTHON}" -m backend.ml.cloud.agent --project "${PROJECT}" "$@"); }
fail() { FAILURE="$1"; say "$1"; exit 1; }

# Before the code is unpacked there is no agent: the exit handler then reaches Cloud Storage and
# Compute Engine with curl and the metadata server's token alone (emulators honoured).
metadata_token_header() {
    # A curl config on a pipe: the token never reaches a command line, the log or a file.
    local token
    token="$(curl -sf --max-time 10 -H 'Metadata-Flavor: Google' \
        "${METADATA}/service-accounts/default/token" \
        | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')"
    if [ -n "${token}" ]; then printf 'header = "Authorization: Bearer %s"\n' "${token}"; fi
}

bare_put() {  # FILE gs://BUCKET/NAME CONTENT-TYPE: one multipart upload (metadata, then bytes)
    local api="${STORAGE_EMULATOR_HOST:-https://storage.googleapis.com}" body="$1.upload"
    local boundary="media-bias-${RANDOM}${RANDOM}"
    case "${api}" in http://* | https://*) ;; *) api="http://${api}" ;; esac
    { printf -- '--%s\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n' "${boundary}"
      printf '{"name": "%s", "contentType": "%s"}\r\n' "${2#gs://"${BUCKET}"/}" "$3"
      printf -- '--%s\r\nContent-Type: %s\r\n\r\n' "${boundary}" "$3"
      cat "$1"
      printf -- '\r\n--%s--\r\n' "${boundary}"; } > "${body}" || return 1
    curl -sf --max-time 60 --retry 3 -o /dev/null --config <(metadata_token_header) \
        -H "Content-Type: multipart/related; boundary=${boundary}" --data-binary @"${body}" \
        "${api}/upload/storage/v1/b/${BUCKET}/o?uploadType=multipart"
    local status=$?
    rm -f "${body}"
    return "${status}"
}

bare_delete_vm() {
    local api="${MEDIA_BIAS_COMPUTE_ENDPOINT:-https://compute.googleapis.com}"
    curl -sf --max-time 60 --retry 3 -o /dev/null --config <(metadata_token_header) -X DELETE \
        "${api}/compute/v1/projects/${PROJECT}/zones/${ZONE}/instances/${INSTANCE}"
}

finish_without_agent() {
    local marker="${WORK_DIR}/DONE.json"
    printf '{"status": "failed", "exit_code": %d, "reason": "%s", "failed_step": "%s", ' \
        "${EXIT_CODE}" "${FAILURE:-the startup script stopped}" "${STEP}" > "${marker}"
    printf '"instance": "%s", "zone": "%s", "finished_at": "%s"}\n' "${INSTANCE}" "${ZONE}" \
        "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)" >> "${marker}"
    bare_put "${LOG_FILE}" "${LOG_URL}" text/plain || say "could not upload the log"
    bare_put "${marker}" "${RUN_URL}/cloud/DONE.json" application/json \
        || say "could not write the completion marker"
}

upload_run() {
    if [ -d "${RUN_DIR}" ]; then
        agent up "${RUN_DIR}" "${RUN_URL}/run" --mirror-after "${DOWNLOADED_FLAG}" || true
    fi
    agent put "${LOG_FILE}" "${LOG_URL}" >/dev/null 2>&1 || true
}

on_signal() {
    # Shutdown or preemption: save what there is; no completion marker, so the run is resumed
    # on a replacement VM.
    trap - EXIT TERM INT HUP
    say "stopping (VM shutdown or preemption); saving the run directory"
    if [ -n "${CHILD}" ]; then kill -INT "${CHILD}" 2>/dev/null; wait "${CHILD}" 2>/dev/null; fi
    upload_run
    exit 143
}

on_exit() {
    trap - EXIT TERM INT HUP
    if [ -f "${PREEMPTED_FLAG}" ]; then
        # Compute Engine deletes a preempted spot VM itself; no marker, so the run is resumed.
        say "preempted: the run directory was saved; a replacement VM resumes it"
        upload_run
        return
    fi
    say "training finished: ${STATUS} (exit code ${EXIT_CODE}, step ${STEP})"
    if [ "${AGENT_READY}" != "1" ]; then
        finish_without_agent
    # The marker is written only after the final upload succeeded (retried), and lists it.
    elif ! agent finish "${RUN_DIR}" "${RUN_URL}/run" "${RUN_URL}/cloud/DONE.json" \
            --status "${STATUS}" --exit-code "${EXIT_CODE}" --reason "${FAILURE}" \
            --step "${STEP}" --gpu-report "${GPU_REPORT}" \
            --instance "${INSTANCE}" --zone "${ZONE}" --mirror-after "${DOWNLOADED_FLAG}" \
            --log-file "${LOG_FILE}" --log-url "${LOG_URL}"; then
        say "the final upload failed: no completion marker, the run stays resumable"
    fi
    if [ "${SELF_DELETE}" = "1" ]; then
        say "deleting this VM (${INSTANCE} in ${ZONE})"
        { [ "${AGENT_READY}" = "1" ] && agent delete-self --zone "${ZONE}" --instance "${INSTANCE}"; } \
            || bare_delete_vm || ${POWEROFF_CMD}
    fi
}
trap on_exit EXIT
trap on_signal TERM INT HUP

wait_for_driver() {
    # Deep Learning VM images install the NVIDIA driver on first boot, which takes minutes.
    local waited=0
    until nvidia-smi -L >/dev/null 2>&1; do
        [ "${waited}" -ge "${GPU_WAIT_SECONDS}" ] && return 1
        sleep 1
        waited=$((waited + 1))
    done
    nvidia-smi -L
}

say "run ${RUN_ID} on ${INSTANCE} (${ZONE}), results to ${RUN_URL}"
STEP=prepare
eval "${PREPARE_CMD}" || fail "preparing the VM failed"

# The code tarball, read with the google-cloud-storage client (CRC32C-checked).
STEP=download
"${PYTHON}" - "${PROJECT}" "${RUN_URL}/code.tar.gz" "${WORK_DIR}/code.tar.gz" <<'PY' || fail "cannot fetch the code"
import sys
from google.cloud import storage
project, url, target = sys.argv[1:]
bucket, _, name = url[len("gs://"):].partition("/")
storage.Client(project=project).bucket(bucket).blob(name).download_to_filename(target, checksum="crc32c")
PY
STEP=unpack
rm -rf "${CODE_DIR}" && mkdir -p "${CODE_DIR}" && tar -xzf "${WORK_DIR}/code.tar.gz" -C "${CODE_DIR}" \
    || fail "cannot unpack the code"
AGENT_READY=1
cd "${CODE_DIR}" || fail "cannot enter ${CODE_DIR}"
STEP=install
say "installing torch from ${TORCH_INDEX:-PyPI}: ${TORCH_BUILD_REASON}"
eval "${TORCH_INSTALL_CMD}" || fail "installing torch from ${TORCH_INDEX:-PyPI} failed"
say "installing the project"
eval "${INSTALL_CMD}" || fail "installing the project failed"

if [ "${CHECK_GPU}" = "1" ]; then
    STEP=gpu-check
    wait_for_driver || fail "no GPU: the NVIDIA driver did not come up within ${GPU_WAIT_SECONDS} s"
    # A matmul on every GPU, compared with the CPU: the installed build has kernels for it.
    # Its last line is the verdict: the failure's reason when it failed.
    GPU_CHECK="$(agent gpu-check --expect "${GPU_COUNT}" --report "${GPU_REPORT}")"
    GPU_CHECK_STATUS=$?
    echo "${GPU_CHECK}"
    [ "${GPU_CHECK_STATUS}" -eq 0 ] || fail "${GPU_CHECK##*$'\n'}"
fi

STEP=inputs
agent down "${RUN_URL}/inputs" "${CODE_DIR}/cloud_inputs" || fail "cannot fetch the inputs"
# A replacement VM (after preemption) continues from the newest checkpoint in Cloud Storage.
agent down "${RUN_URL}/run" "${RUN_DIR}" || fail "cannot fetch the earlier run directory"
touch "${DOWNLOADED_FLAG}"

if [ "${GPU_COUNT}" -gt 1 ]; then
    LAUNCH=(torchrun --standalone "--nproc_per_node=${GPU_COUNT}")   # data-parallel, all GPUs
else
    LAUNCH=("${PYTHON}")
fi
if [ -f "${RUN_DIR}/results.json" ] && grep -q '"status": "completed"' "${RUN_DIR}/results.json"; then
    say "the run already completed on an earlier VM"
    TRAIN=()
elif [ -f "${RUN_DIR}/config.yaml" ]; then
    say "resuming ${RUN_ID} from its last checkpoint"
    TRAIN=("${LAUNCH[@]}" run_experiment.py resume "${RUN_DIR}")
else
    rm -rf "${RUN_DIR}"
    TRAIN=("${LAUNCH[@]}" run_experiment.py train cloud_inputs/config.yaml --run-id "${RUN_ID}"
           --output-dir "${RUNS_DIR}" --set "training.device=${TRAIN_DEVICE}")
fi

if [ -n "${WANDB_SECRET}" ]; then
    # Only the training process's environment holds the key; it is never printed or stored.
    WANDB_API_KEY="$(agent secret "${WANDB_SECRET}")" && export WANDB_API_KEY \
        || say "W&B secret ${WANDB_SECRET} not readable; W&B runs offline"
fi

STEP=train
if [ "${#TRAIN[@]}" -eq 0 ]; then
    EXIT_CODE=0
else
    say "training: ${TRAIN[*]}"
    "${TRAIN[@]}" &
    CHILD=$!
    agent watch "${RUN_DIR}" "${RUN_URL}/run" --pid "${CHILD}" --interval "${SYNC_INTERVAL}" \
        --log-file "${LOG_FILE}" --log-url "${LOG_URL}" --mirror-after "${DOWNLOADED_FLAG}" \
        --preemption-url "${METADATA_URL}" --preempted-flag "${PREEMPTED_FLAG}" &
    WATCHER=$!
    wait "${CHILD}"
    EXIT_CODE=$?
    CHILD=""
    wait "${WATCHER}" 2>/dev/null
    unset WANDB_API_KEY
fi
if [ "${EXIT_CODE}" -eq 0 ]; then STATUS=completed; fi
exit "${EXIT_CODE}"

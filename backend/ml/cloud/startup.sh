# --- body (backend/ml/cloud/startup.sh); the variables above are filled in per VM ---
# Runs as the VM's startup script: fetch the code, install the pinned torch (CUDA build) and the
# project, wait for the GPU, train (or resume from the last checkpoint in Cloud Storage), sync
# the run directory while training and at the end, write the completion marker, delete this VM.
# No credential is ever written: Cloud Storage and Compute Engine are reached with the VM's
# service account.
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
METADATA_URL="http://${GCE_METADATA_HOST:-metadata.google.internal}/computeMetadata/v1/instance/preempted"
STATUS=failed
EXIT_CODE=1
FAILURE=""
CHILD=""
mkdir -p "${WORK_DIR}" && cd "${WORK_DIR}" || exit 1
rm -f "${DOWNLOADED_FLAG}" "${PREEMPTED_FLAG}"
exec > >(tee -a "${LOG_FILE}") 2>&1

say() { echo "[media-bias] $(date -u +%H:%M:%S) $*"; }
agent() { (cd "${CODE_DIR}" && "${PYTHON}" -m backend.ml.cloud.agent --project "${PROJECT}" "$@"); }
fail() { FAILURE="$1"; say "$1"; exit 1; }

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
    say "training finished: ${STATUS} (exit code ${EXIT_CODE})"
    # The marker is written only after the final upload succeeded (retried), and lists it.
    if ! agent finish "${RUN_DIR}" "${RUN_URL}/run" "${RUN_URL}/cloud/DONE.json" \
            --status "${STATUS}" --exit-code "${EXIT_CODE}" --reason "${FAILURE}" \
            --instance "${INSTANCE}" --zone "${ZONE}" --mirror-after "${DOWNLOADED_FLAG}" \
            --log-file "${LOG_FILE}" --log-url "${LOG_URL}"; then
        say "the final upload failed: no completion marker, the run stays resumable"
    fi
    if [ "${SELF_DELETE}" = "1" ]; then
        say "deleting this VM (${INSTANCE} in ${ZONE})"
        agent delete-self --zone "${ZONE}" --instance "${INSTANCE}" || ${POWEROFF_CMD}
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
eval "${PREPARE_CMD}" || fail "preparing the VM failed"

# The code tarball, read with the google-cloud-storage client (CRC32C-checked).
"${PYTHON}" - "${PROJECT}" "${RUN_URL}/code.tar.gz" "${WORK_DIR}/code.tar.gz" <<'PY' || { say "cannot fetch the code"; exit 1; }
import sys
from google.cloud import storage
project, url, target = sys.argv[1:]
bucket, _, name = url[len("gs://"):].partition("/")
storage.Client(project=project).bucket(bucket).blob(name).download_to_filename(target, checksum="crc32c")
PY
rm -rf "${CODE_DIR}" && mkdir -p "${CODE_DIR}" && tar -xzf "${WORK_DIR}/code.tar.gz" -C "${CODE_DIR}" \
    || { say "cannot unpack the code"; exit 1; }
cd "${CODE_DIR}" || exit 1
say "installing torch and the project"
eval "${INSTALL_CMD}" || fail "installing the project failed"

if [ "${CHECK_GPU}" = "1" ]; then
    wait_for_driver || fail "no GPU: the NVIDIA driver did not come up within ${GPU_WAIT_SECONDS} s"
    "${PYTHON}" -c 'import sys, torch
found = torch.cuda.device_count() if torch.cuda.is_available() else 0
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees {found} GPU(s)")
sys.exit(0 if found >= int(sys.argv[1]) else 1)' "${GPU_COUNT}" \
        || fail "no GPU: torch does not see the ${GPU_COUNT} GPU(s) of this VM"
fi

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

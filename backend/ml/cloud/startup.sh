# --- body (backend/ml/cloud/startup.sh); the variables above are filled in per VM ---
# Runs as the VM's startup script: fetch the code, install it, train (or resume from the last
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
STATUS=failed
EXIT_CODE=1
CHILD=""
mkdir -p "${WORK_DIR}" && cd "${WORK_DIR}" || exit 1
exec > >(tee -a "${LOG_FILE}") 2>&1

say() { echo "[media-bias] $(date -u +%H:%M:%S) $*"; }
agent() { (cd "${CODE_DIR}" && "${PYTHON}" -m backend.ml.cloud.agent --project "${PROJECT}" "$@"); }

final_sync() {
    if [ -d "${RUN_DIR}" ]; then agent up "${RUN_DIR}" "${RUN_URL}/run" --delete || true; fi
    agent put "${LOG_FILE}" "${LOG_URL}" >/dev/null 2>&1 || true
}

on_signal() {
    # Preemption or shutdown: save what there is; no completion marker, so the run is resumed
    # on a replacement VM.
    trap - EXIT TERM INT HUP
    say "stopping (VM shutdown or preemption); saving the run directory"
    if [ -n "${CHILD}" ]; then kill -INT "${CHILD}" 2>/dev/null; wait "${CHILD}" 2>/dev/null; fi
    final_sync
    exit 143
}

on_exit() {
    trap - EXIT TERM INT HUP
    say "training finished: ${STATUS} (exit code ${EXIT_CODE})"
    final_sync
    agent marker "${RUN_URL}/cloud/DONE.json" --status "${STATUS}" --exit-code "${EXIT_CODE}" \
        --instance "${INSTANCE}" --zone "${ZONE}" || true
    if [ "${SELF_DELETE}" = "1" ]; then
        say "deleting this VM (${INSTANCE} in ${ZONE})"
        agent delete-self --zone "${ZONE}" --instance "${INSTANCE}" || ${POWEROFF_CMD}
    fi
}
trap on_exit EXIT
trap on_signal TERM INT HUP

say "run ${RUN_ID} on ${INSTANCE} (${ZONE}), results to ${RUN_URL}"
eval "${PREPARE_CMD}" || { say "preparing the VM failed"; exit 1; }

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
say "installing the project"
eval "${INSTALL_CMD}" || { say "installing the project failed"; exit 1; }
agent down "${RUN_URL}/inputs" "${CODE_DIR}/cloud_inputs" || { say "cannot fetch the inputs"; exit 1; }

# A replacement VM (after preemption) continues from the newest checkpoint in Cloud Storage.
agent down "${RUN_URL}/run" "${RUN_DIR}" || { say "cannot fetch the earlier run directory"; exit 1; }
if [ -f "${RUN_DIR}/results.json" ] && grep -q '"status": "completed"' "${RUN_DIR}/results.json"; then
    say "the run already completed on an earlier VM"
    TRAIN=()
elif [ -f "${RUN_DIR}/config.yaml" ]; then
    say "resuming ${RUN_ID} from its last checkpoint"
    TRAIN=("${PYTHON}" run_experiment.py --resume "${RUN_DIR}")
else
    rm -rf "${RUN_DIR}"
    TRAIN=("${PYTHON}" run_experiment.py cloud_inputs/config.yaml --run-id "${RUN_ID}" --output-dir "${RUNS_DIR}")
fi

if [ -n "${WANDB_SECRET}" ]; then
    # Only the training process's environment holds the key; it is never printed or stored.
    WANDB_API_KEY="$(agent secret "${WANDB_SECRET}")" && export WANDB_API_KEY \
        || say "W&B secret ${WANDB_SECRET} not readable; W&B runs offline"
fi

if [ "${#TRAIN[@]}" -eq 0 ]; then
    EXIT_CODE=0
else
    "${TRAIN[@]}" &
    CHILD=$!
    agent watch "${RUN_DIR}" "${RUN_URL}/run" --pid "${CHILD}" --interval "${SYNC_INTERVAL}" \
        --log-file "${LOG_FILE}" --log-url "${LOG_URL}" &
    WATCHER=$!
    wait "${CHILD}"
    EXIT_CODE=$?
    CHILD=""
    wait "${WATCHER}" 2>/dev/null
    unset WANDB_API_KEY
fi
if [ "${EXIT_CODE}" -eq 0 ]; then STATUS=completed; fi
exit "${EXIT_CODE}"

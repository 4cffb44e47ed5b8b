# Cluster mode: upload $OUT_DIR (/out) to s3://$S3_BUCKET/$S3_PREFIX/ when the script exits, whatever the
# outcome, so early failures, scenario failures and deadline kills (SIGTERM) still leave logs.
vast_upload() {
  local rc=$?
  trap - EXIT TERM INT
  # mc keeps its aliases in a config dir; $HOME may not be writable for the run's uid.
  export MC_CONFIG_DIR="${MC_CONFIG_DIR:-/tmp/.mc-vast}"
  if [ -n "${S3_BUCKET:-}" ] && command -v mc >/dev/null 2>&1; then
    echo "[vast] uploading $OUT_DIR to $S3_BUCKET/$S3_PREFIX (exit status $rc)" >>"$LOG_FILE"
    if mc alias set vast "$S3_ENDPOINT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >/dev/null 2>&1 \
      && mc mirror --overwrite --quiet "$OUT_DIR/" "vast/$S3_BUCKET/$S3_PREFIX/" >/dev/null 2>&1; then
      echo "[vast] upload complete" >&2
    else
      echo "[vast] error: uploading results to $S3_BUCKET/$S3_PREFIX failed" >&2
      # 75 (EX_TEMPFAIL): the scenario succeeded, the infrastructure failed; the Job's pod
      # failure policy retries it (manifests::job::EXIT_UPLOAD_FAILED).
      [ "$rc" -eq 0 ] && rc=75
    fi
  else
    echo "[vast] error: cannot upload results (S3_BUCKET unset or mc missing)" >&2
    [ "$rc" -eq 0 ] && rc=1
  fi
  exit "$rc"
}
trap vast_upload EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

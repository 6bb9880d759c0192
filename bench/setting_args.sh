# Sourced by the device call scripts (bench/unpack_carry.sh,
# bench/decode_attn_call.sh): setting_args SETTING puts a setting's words in
# the array ARGS, to run as env "${ARGS[@]}" command. "default" has none;
# commas part the words; a "+" within one is a space (several NVRTC options
# in one value: "KVBENCH_NVRTC_OPTS=-DKVB_A=1+-DKVB_B=2", two candidate defines).
setting_args() {
	ARGS=()
	[ "$1" = default ] && return
	local kv x
	IFS=, read -ra kv <<< "$1"
	for x in "${kv[@]}"; do ARGS+=("${x//+/ }"); done
}

// Bundled by the test (esbuild) into one ES module the harness page imports.
export * as sdk from "matrix-js-sdk";
export { CallState, CallErrorCode, createNewMatrixCall, CallEvent } from "matrix-js-sdk/lib/webrtc/call.js";
export { CallEventHandlerEvent } from "matrix-js-sdk/lib/webrtc/callEventHandler.js";
export { initAsync as initCryptoWasm } from "@matrix-org/matrix-sdk-crypto-wasm";

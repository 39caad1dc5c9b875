/*
 * dogbreed's replacement for multi-model-server 1.1.11's ModelResponseDecoder (same package and name, so
 * scripts/patch_mms_frontend.sh can put it in the frontend's jar in place of the original).
 *
 * Why: the Python worker writes each response as one frame; netty hands the decoder whatever one socket
 * read returned, and its read size adapts to recent traffic (down to 64 bytes after a run of small
 * frames). The original decoder treats a frame cut inside its header map (CodecUtils.readMap bounds each
 * length by the bytes already read) or inside the per-request status code as corrupt: the frontend drops
 * the worker and the request in flight gets "500 Worker died." This decoder reads the same frame format
 * and, wherever the frame is cut, waits for the rest instead.
 */
package com.amazonaws.ml.mms.util.codec;

import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.util.messages.Predictions;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

public class ModelResponseDecoder extends ByteToMessageDecoder {

    /** Marks the patched class; the patch script and the tests look for it. */
    public static final String PATCHED_BY = "dogbreed: partial frames wait for the rest";

    /** Thrown where the frame is cut: the reader index goes back and decode waits for more bytes. */
    private static final class Incomplete extends Exception {
        private static final long serialVersionUID = 1L;

        Incomplete() {
            super(null, null, false, false);
        }
    }

    private static final Incomplete INCOMPLETE = new Incomplete();

    private final int maxBufferSize;

    public ModelResponseDecoder(int maxBufferSize) {
        this.maxBufferSize = maxBufferSize;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        in.markReaderIndex();
        try {
            out.add(readResponse(in));
        } catch (Incomplete e) {
            in.resetReaderIndex();
        }
    }

    private ModelWorkerResponse readResponse(ByteBuf in) throws Incomplete {
        ModelWorkerResponse resp = new ModelWorkerResponse();
        resp.setCode(readInt(in));
        resp.setMessage(readString(in));
        List<Predictions> predictions = new ArrayList<>();
        int len;
        while ((len = readLength(in)) != CodecUtils.END) {
            Predictions prediction = new Predictions();
            prediction.setRequestId(CodecUtils.readString(in, len));
            prediction.setContentType(readString(in));
            prediction.setStatusCode(readInt(in));
            prediction.setReasonPhrase(readString(in));
            prediction.setHeaders(readMap(in));
            prediction.setResp(CodecUtils.read(in, readLength(in)));
            predictions.add(prediction);
        }
        resp.setPredictions(predictions);
        return resp;
    }

    private static int readInt(ByteBuf in) throws Incomplete {
        if (in.readableBytes() < 4) {
            throw INCOMPLETE;
        }
        return in.readInt();
    }

    /** A length prefix whose bytes have all arrived (END passes through); corrupt sizes still fail. */
    private int readLength(ByteBuf in) throws Incomplete {
        int len = CodecUtils.readLength(in, maxBufferSize);
        if (len == CodecUtils.BUFFER_UNDER_RUN) {
            throw INCOMPLETE;
        }
        return len;
    }

    private String readString(ByteBuf in) throws Incomplete {
        return CodecUtils.readString(in, readLength(in));
    }

    private Map<String, String> readMap(ByteBuf in) throws Incomplete {
        Map<String, String> map = new HashMap<>();
        for (int entries = readLength(in); entries > 0; entries--) {
            String key = readString(in);
            map.put(key, readString(in));
        }
        return map;
    }
}

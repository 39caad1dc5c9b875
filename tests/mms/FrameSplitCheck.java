/*
 * Feeds multi-model-server's response decoder (whichever the jar on the classpath holds) a stream of real
 * worker frames, cut into two socket reads at every byte offset, and checks each frame comes out whole.
 * Usage: java -cp JAR:. FrameSplitCheck FRAMES_FILE EXPECTED_FILE
 * FRAMES_FILE holds the frames back to back; EXPECTED_FILE one line per frame: request id, status, content
 * type, header count and body length, tab-separated. Prints "failures N of M" and exits 1 on any failure.
 */
import com.amazonaws.ml.mms.util.codec.ModelResponseDecoder;
import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.util.messages.Predictions;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

public class FrameSplitCheck {
    public static void main(String[] args) throws Exception {
        byte[] frames = Files.readAllBytes(Paths.get(args[0]));
        List<String> expected = Files.readAllLines(Paths.get(args[1]), StandardCharsets.UTF_8);
        int failures = 0;
        for (int cut = 1; cut < frames.length; cut++) {
            if (!decodesWhole(frames, cut, expected)) {
                failures++;
            }
        }
        System.out.println("failures " + failures + " of " + (frames.length - 1));
        System.exit(failures == 0 ? 0 : 1);
    }

    private static boolean decodesWhole(byte[] frames, int cut, List<String> expected) {
        EmbeddedChannel channel = new EmbeddedChannel(new ModelResponseDecoder(6553500));
        List<String> seen = new ArrayList<>();
        try {
            channel.writeInbound(Unpooled.wrappedBuffer(Arrays.copyOfRange(frames, 0, cut)));
            channel.writeInbound(Unpooled.wrappedBuffer(Arrays.copyOfRange(frames, cut, frames.length)));
            ModelWorkerResponse response;
            while ((response = channel.readInbound()) != null) {
                for (Predictions p : response.getPredictions()) {
                    seen.add(p.getRequestId() + "\t" + p.getStatusCode() + "\t" + p.getContentType() + "\t"
                            + p.getHeaders().size() + "\t" + p.getResp().length);
                }
            }
            channel.finishAndReleaseAll();
        } catch (RuntimeException e) {  // the decoder gave up on the frame (the worker would be dropped)
            return false;
        }
        return seen.equals(expected);
    }
}
